//! Golden vectors for the k-quant formats, made by llama.cpp's ggml (libggml-base / libggml-cpu
//! of llama-cpp-python 0.3.36) with `scripts/golden/make_kquant_vectors.py`. Do not edit by hand:
//! rerun the script.
//!
//! - quantize: our reference quantizer must write exactly ggml's `quantize_row_*_ref` bytes;
//! - dequantize: exactly ggml's `dequantize_row_*` floats (compared through an FNV-1a hash of
//!   their bits), for those blocks and for blocks of arbitrary bytes;
//! - vec_dot: every variant within 1e-4 (relative) of ggml's AVX2 `ggml_vec_dot_*_q8_K` against
//!   a fixed Q8_K activation row, which our Q8_K quantizer must also reproduce byte for byte.

use kernels::quant::{q2_k, q3_k, q4_k, q5_k, q6_k, q8_k, QuantFormat};
use kernels::GgmlType;

const QK_K: usize = 256;
const NBLOCKS: usize = 4;
const ACT_SEED: u32 = 0xac7;

/// xorshift32, as in the script.
struct XorShift(u32);

impl XorShift {
    fn next(&mut self) -> u32 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        self.0 = s;
        s
    }
    /// An integer in -2^23..2^23.
    fn uniform(&mut self) -> i32 {
        (self.next() >> 8) as i32 - (1 << 23)
    }
}

fn pow2(e: i32) -> f32 {
    f32::from_bits(((127 + e) as u32) << 23)
}

/// The script's `gen_input`: four kinds of block, cycling; every value exact in f32.
fn gen_input(seed: u32, nblocks: usize) -> Vec<f32> {
    let mut g = XorShift(if seed == 0 { 1 } else { seed });
    let mut out = Vec::with_capacity(nblocks * QK_K);
    for b in 0..nblocks {
        for i in 0..QK_K {
            let v = match b % 4 {
                0 => g.uniform() as f32 * pow2(-21),
                1 => {
                    let s = (g.uniform() >> 2) + (g.uniform() >> 2) + (g.uniform() >> 2);
                    let v = s as f32 * pow2(-21);
                    if i % 37 == 5 {
                        v * 8.0
                    } else {
                        v
                    }
                }
                2 => {
                    let u = g.uniform() & 0x7F_FFFF;
                    if (32..64).contains(&i) {
                        0.0
                    } else {
                        u as f32 * pow2(-22)
                    }
                }
                _ => g.uniform() as f32 * pow2(-33),
            };
            out.push(v);
        }
    }
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn fnv1a64(v: &[f32]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for x in v {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01B3);
        }
    }
    h
}

struct Case {
    ty: GgmlType,
    format: &'static dyn QuantFormat,
    seed: u32,
    /// ggml's blocks for `gen_input(seed, NBLOCKS)`.
    quant: &'static str,
    /// Hash and first values (bits) of ggml's dequantization of `quant`.
    dequant_hash: u64,
    dequant_head: [u32; 4],
    /// Blocks of arbitrary bytes (with sane scales) and the hash of ggml's dequantization.
    arb: &'static str,
    arb_hash: u64,
    /// ggml's AVX2 and generic vec_dot of `quant` against `ACT` (f32 bits); none for Q8_K.
    dot: Option<(u32, u32)>,
}

/// ggml's Q8_K blocks for `gen_input(ACT_SEED, NBLOCKS)`.
const ACT: &str = concat!(
    "71cb00bd5535cfa0743cc883b01ef27bb4742ed8b45ca98fbff7f51d5eb308e1958313bf3bc8a5445a2484a809be04d2",
    "a7f046d87ea28ce710f11ab9edbfa704048ba4f9c7247aa6be6f2349a244601135b2de1dd7d2e5627cd99167d0830b52",
    "6f7531daec0b8403f871a463e6184755558e1da25d51a8d9b34b50ec9af756b8cfbdd261437bdc1da4adb6980851a7e9",
    "1351d73d89cd001c37300f7633776fc878d04aa51d636a5fc393769b71f491305b6fb24d6800e7ad22ae4745f21434ca",
    "bc8129fadeb21f135d31cfb86f7eec7bae370bf94686cbaabefc25b21e5185e57b107dfc432acd3eba763e304ef52559",
    "607b6c33df75db96780ae16eaa6f23434f6545365d00f4fde8feeafddd00dc002a00c7ffb7ff76019f01bcff1401afff",
    "510344026d30a1bd13f3e9effe21f803fe09f203080b130102fafc090402faf503fd1006faf0f1f2f903fbf8f404eff5",
    "f10331f9e5f8050b04fefcf8fa0cf3f2030705f9f4ff02e9f50b0b12fbfb0b10fb0214080403fd81f91eec0bfe08f905",
    "0dfcfafa0909090711f30508070bf8f4f608f80804fff6fb04faf9f2bef6f8f3ed06f4100b0116040e04f8f5fff90fff",
    "15f40e0e0f12f6f5090af214fcf8ffe107fdfefb09f60406f1f70b0ff0fef408e60416f7ff13fa010a00130501faf901",
    "fa05080212fce90af9fb1bf203f8fbfef2dfec1bdf17fcfc0a020af8ff050702080aea04f4eae8fb03f9044ef40e0bfe",
    "07f5070f1a0cee0a02f9f50dfa13f319efe9ff16041105e61b00d9ffd6ffc7ffccff31000100a5ff3600f3fff0ff2100",
    "bbffdcff890003006ac380bcb391cbecedf597e2f79081fe9fb4f6daa390c3fb8dff82b4b0e1a2d8bcbbdfae00000000",
    "000000000000000000000000000000000000000000000000000000008aa09ba9a18a96c7e99aece8a78eea949683bb98",
    "dff382c8e3ffabecc1bfa4ee81cc81da84c4eacff8f7d3a4e8c890f28c90ba8487e5a1bcf487ffaebff9ffd5caabda84",
    "d084f7a990e6988aaa96e6f3dad5f3b892babbddc79883a989bcff908b98d69fe784ddeca9e7bcefe0fdc086c182b3ee",
    "e5add0b2cf83ef9cf7c18ce3e4bdebb389e7899cca9ae7a5848fc7d381a08a85c8ddd29eccafaeb9c3afa5afa0a9b7da",
    "eebad9d1f7b1a2faafd7f8849b84b2a3a3e6db84a7b7aa8cdfd598997ffcc2fb0000000000fb13fc41fcd7fb78fb9dfb",
    "2afcfcfb71fbedfa72fcd5fa74fa0037db4e9dce2657034f4a1907e817830f9de5458c9d36f8e3725e4d7363352d3d77",
    "41cbde844369b98c5497d33718387e323233253c2ccbab72490daa7193d17eb56e463ced67881a6dd6dfe0ea9d12b002",
    "aa9acd1cff52814ee09868672f83a0c2661ccac71748a5ee9b3f0f662eab81752a6a5c783b1c94214605fa8559c570e6",
    "e7b51ab2fc644501a16716a798c79c1c28402173c9b24543c1a29fc63a49790eaf7ffc1e309c489b740c6c3b32d3dbc3",
    "15a80dff4b78f3ec2d55159af5312c6016ed520efa3b14578de16d8dced6f8570d274d6ea5fcf928313adf39aa2746d5",
    "998a117bd0099b485f40a3e8b8d0d6c7fa28b6ad70ddd26ad482218f796137a3fbff6d025400e2003300a8fe2300b201",
    "eafed100c1004e015e002001bafec8ff",
);

const CASES: &[Case] = &[
    Case {
        ty: GgmlType::Q8_K,
        format: &q8_k::Q8K,
        seed: 0x51,
        quant: concat!(
            "f826003d81c7e1bd01bad3a95584f26be96c81e95d0127adcc9d213da8aba6e865127719e454e39d1a067c84d91e7dd5",
            "54d855e50bfc246bb9422d0acbf67c7c3f94b3c5ff602a9923b187b58f8402baf5a91e005b928b7beb8fc492f45894e4",
            "1ee13e1f9e9c20b78a6b224a03a634c9c355aefeb3fa26b61514b5bd7556939158c1cec4a309a4f2c69804f413609456",
            "1518252ed837bf2785eeb96f6bbb60f9dca724088d5a1f5abca1f77a0eb3956a0ecca382719bb41e18f5c2de92cf072b",
            "20946117b94ff4277aa4b51ac78bf8eef1d354cfcfd12f469076d9c3211e079282311a94c777fffde76d8802e7346aca",
            "b71b1367ffce5d38205bb19a72097ef96daee2db12fee1ff8700cc00bdfde3fedcfebefe75ffbeffedfe4aff2ffff0fe",
            "b300f2003e7fa93d051cff0e00780607f6020a0803e5f305e9ee0cf4fefdf9f4ea07051511ef01f6f6fb11fbf9e6e713",
            "eafb3009f6060402f60710f8f61f06f202030ffdf514f70bfbfd090dedf60aeefaf4e50c021b061813070509150106eb",
            "f0f1fefaf20607fa0506f80f04fc0af7eaf3fff106eefd0008e8fee93bf911fb00020cf7060114061106f0f9060808f3",
            "f6fb1618fe050c0d1af2011af8f015f8f1dc1cf1fe190ff604f0100402f9ff1104020002faf5090dfcf1f61206051a09",
            "0d0304fdf3f7811afdf309eefe0004fafdeff70400fefdf302ff032204faeded090d0dfbfff200e30b0deb18f60e07ff",
            "f8f1fef1faff01eef9fa0d10fd0ef9fa0aed15f814eef4f99d00c1fff6ff2e0003000100d1ff3d00440012002000b9ff",
            "b8fff0ffe5ff01008ae480bcdf87d6e4cefb8fcfefa3cea2d1edf594c4d5b88de3008cfce3a4a9b786a8e29600000000",
            "00000000000000000000000000000000000000000000000000000000dfb09eb9e68ef987b9e5c8f1b3a583e8cd89de8f",
            "cce9eee3f5e4dacad2df84aea4a5ce9dde8294c8bcac84f4a0c4a3d1bfde8f9ea8d9988dfa8fd4f3c5df9edba58de39c",
            "c1ac88a097d887d2a18ee1dc8897bda5d2c29b9dabdb9b8982dac2afa2a1f98b99fceed28cfd96bd85d2d7bfe19bb289",
            "abbca2d48a82bbfa93daddcb98cda2ceda8ca4e0c384b083a885e79adbcd88e6ede8e78291e787bf8284ee82939181a2",
            "9f91a8b8ada5c9c2f4b1ccddf8b2ebe0a3a5c0b6f485d8a09af3d7f490fcd6fb00000000f4fba9fc28fbddfbfafac4fa",
            "e5fb6afbe7fa88fb02fb7cfc48d2003707557b508d55824afc20c73577a4b9a533d1ec78109f934fbea6e026e60b6e5b",
            "f840fb52a229f1507866eb22f070ceddd2be3e527af2a3ce9d28568a73ba434caa31f9bdffe37239dc0410764c96a2eb",
            "be68dacd2077893f9ae2fffa868df82136062cbc57664e98c1ebbc4e08e9b5052ed75a29d751daf2c397ca0a1ca5d707",
            "81ae5d36da542fd7e1ad0c7d1428f0fc7a247e43b158200521dce60f8866fc21618498bfc68ebfe85a7e7a0905ecd294",
            "3ade92ce665cf4e46a153f5d26df9598d9ae4448c02f6e284a78d73a8119c4a96f3dcf0b5142a57b9994d4fe0134246e",
            "cf672198a30d90186646b921700b2d5fee252e013d23444b69ee05a28668de7966001d0087015e00f3ffcdfe280049ff",
            "35008a01e9fe5f007200ff00d4007401",
        ),
        dequant_hash: 0x6b7024c246bd93df,
        dequant_head: [0xc07e4d54, 0xbfe4456a, 0xbf784b80, 0xc00628cc],
        arb: concat!(
            "f085493c1fcc7041a03d822024371805a5906e352ced835740a4ae48d353f13860c289d42c73c56c3ed6f7bf79f824d9",
            "8bf6e6c1be1afb0bc5aa317019e2b34dfb73e0fa8139e4c90c2ea792503db544f53cb478410ac9885e2f1c62f0b2d7b4",
            "7be2c558ed0b3c3dd7e31886d8218e9ce920aeb04c27fc04ee5d66945afdb55ce33b7e90a6d2563589db287c6fec0b8d",
            "00318b6cda29bdf70f1f3efff914feeccd026f28f6776165caf75484c589af3f747e19a8f99ba1109c00be00229fa535",
            "660a50322c9ecba2a9fb39f69a0ec0209f9800a21f223bbbfaf53a0fcaed3a76b18a178c14a0cdda96b26f641732959b",
            "b83ce135c0d3c6b2c1636cdfceb41a773b1d3352981ef19ae16888bb69a8adf88ab866ba85b6d9013703a3a41fc4cfe6",
            "a04b0a514b1f3abaf3d3da74b8b8a4fc2f2093c87bd2134a54ed5eaf2cfca25e9858ba2d35a58ec9e2210728c8664c46",
            "727b52de6f44d42149efa43279ee33d9e1d1797acf873a04ce6f42eb7c847f6a39b715583e2d30e7abab98d531b7a996",
            "48aa4ea4be3a95d8b13e4fa0639bbe4459ede45e03c6abb4ccb359eb7fef7d358bf46fe676400ec56cb904f72ba25a5c",
            "420fa79862da34934d6099194a3769f1b2983e8ebf04ff2c03080f3453d1bdb01db23f7fa04c288ede8415ab38bc27d5",
            "569293cc91bb9a5814caea9714b059b3a445aa3ef16b14f2ba0e8862d6c88c17a72db33b66600bbb14e32387e68c5142",
            "860a75da1ebc3b43869a1d16b2735a835b47ac1dbe0b599367816d5792a0e342bdd19b01e612f077d8aa792d42a4f1bc",
            "9dd882ef0ed42c08",
        ),
        arb_hash: 0x02da592027bd458e,
        dot: None,
    },
    Case {
        ty: GgmlType::Q4_K,
        format: &q4_k::Q4K,
        seed: 0x52,
        quant: concat!(
            "6520f32bfffcf8f6fdf9fafe0299fec650e42c249d7279850d8e4924bbc4a0b26021aa7d60e6363a54833a4da81ba12b",
            "79b602955647d8d9fa0fd1b6487aff92f25771d4e0b7567ef360b3956bec142c5314167056b3cee599dd3671f1c6ca42",
            "5fe587bd051d46f62ec4055093e8ea3821198ba8cdc004e0bcb31f71a862fcd025dcb06c203f616a3000102eaac9cef5",
            "da251e35f83f0e24343f0a206f8c7b6cddeddcebeee0deddeded0cffedeeededfddeddedecfdecedecedeeeefceeeeed",
            "ccb8e6ced6fcbcdac9c9dac7d8d9dfc0dcd7dbee0ceeded9c8debacbccccd6bb91d1a14141f1a141b16261d2a2c1e111",
            "b1928171d0e2d2f2c05ff260629051a1d7b9285e68cdfdcb88ae9ac30b51b6409b96f663d352883566ecfd1d9c846888",
            "5d188810fbc0fffdc3000040fe0e0b7f0c01070a070708060505090101020a030e060f070c0d0a020e000b02010e0603",
            "5ffeaaa6e2e26227b16850ca0589128473ac7728e684ca738626f06145fb61d785ebefc50c626c1d2b623cd4df8dfb28",
            "6fc4cf287c0504c9a8f3c7a135ab595a40f1228692756222bd6530fd9d2f2d803beaee46489284ab3626d2894bed4e3d",
            "23000401f6fcfafcf3fbf1fcccaffcfb2acef9fd3fd83ad765482a50945d4202eb2775c6912e55d2343745a4383fe9ae",
            "101afe1493f4f05c66ee2e1e9cc429c86b77ee3044ad0a3c2bcdde8087ac5c594b8e77811dea3c673b0f33bad7ed6064",
            "947b1ba930b6b07e6f5047ccea6d3bb4ebf996f36e3c64541f0b29f980f3dca3e3944933bfe2ec89155b2d160b1e93a5",
        ),
        dequant_hash: 0xa89a674914802170,
        dequant_head: [0xc0727380, 0xbfd00c00, 0x402cd500, 0xbfd00c00],
        arb: concat!(
            "4c22d191d43f3345af72832aa7bdd34a1267cab797bce28155e90f9928b4655bb091544af4365eb69b49a12eec123db9",
            "6a8047023e65b85c71877304b94bcf48bdf3b6e675788d2bc0d04eac3b6afb427c8a311298c59d9688da7c88b0c9572c",
            "ad4b6868ee809973ed67f8b76f28469965163b32cd04d941114e1c4f93776e985a25220df455eb7cdc4cad76fdb4e631",
            "00382102db7644641320334e1faffef848a044efab3ca0041b18cbac960952ed519748f177ee54ed09291be770eb5c8c",
            "f8a7e497a7c6734a2962e7cda850f3364974369a40f0e2827b03cf16d0a4ee11448b77b454f57e3060d8d1fa23a958af",
            "be70cf3aebcf215929cc0003e94194a5b48b45858b1b69c657f72a806f1318e8b90160b97e7331bbb8739deb466a2cfd",
        ),
        arb_hash: 0xef80d040ede4437b,
        dot: Some((0x43c4d43e, 0x43c4d43e)),
    },
    Case {
        ty: GgmlType::Q6_K,
        format: &q6_k::Q6K,
        seed: 0x53,
        quant: concat!(
            "90e41238a9637fffc7768f256de4718985191f0b6dca13b58c47aa0042887a6f08f6ed5044735edd7d0ac549010a7eb1",
            "71acb9845e0e07fefc69fa36d4017791380580b75d374336fa43c150301110c80ffcbd77fdb56492710315671d1f2ca1",
            "3989d51b1d278fe2a865880411b17160605dc121423d5cbd3b7c4f0af112a4d314c58591b51c6a0d66e110f8adf51417",
            "5f98ccf775d1e312f60ee328a9227b836e08e5ee2f4fe726e3996444cb913c42bf21b9ba8149de16110dd48f3109d09c",
            "7d8e757a88876a888e7c77806e86867d1614f0052fa3ff50a092b22fcfdf1d85010f341cc49c121c5776c0f49830aeca",
            "e3664142c06ec1ee4e244201a14ef122e281d916e2111dd6d108f11bfb07f01b14e2a3730d49bfe14d17d5642550faa6",
            "4ef7fdedfc01648e5844904187e18e0fc50b38153d041521fa23f3c12a3fe1fbe1fec585590a0041ac23796f7b1e1ad7",
            "b0035a2aa9965924d69adae95115292aea4955895da134696aa64a8962a859b9994aa989b631aa925a8c69499a905562",
            "7b69f9c1b1866a012a0206e05aaaa18506c95c108ff2ca0cf4800f41f2f0f108980b7b1cf0913e192559a5cf41263e91",
            "004511ade6fe6a2500068cbda541d37a0cafbe4cf05000b0e0e070e0d0107070b0507040a080e0c050c080808090b0d0",
            "0080b05041bcf69909523509dda298f30c723f24c2b4b2b904f8fccdd886818081ba9707998837a659f9f4ca0edcd72c",
            "2da0ceecccd756e437481713b7a02931ef67474042111040501140500101101011000110410141405011405111510041",
            "011100414405145055001004114440540500115545100510450411500500555010145429928400008296828a80819683",
            "8a9a8280071003c410fac106aefa113a0e50afb803c207ceb646bee65e09c58e4789b5e4c040b400f34d51327574fd95",
            "0f0f70314231a4477f2750b1b2efddc1832714d8e6744a3f2d038b78693bc6688feb60e500fd7370bbe5bb990662209c",
            "8f9960f6fd054995ac84f76037ea0745c61ea3627e6429532f7046d49ca4f401bdae1a86664a8f330d29a493acaa0b91",
            "4f782e32975500b87905e0cfabbdc8f57e85233b28aece69dec21573eeb00c9ca94dc0b47f10f7bee293241a018dc0a9",
            "9d8133143dd78e79856c647e8780737e89837a797f7a0400",
        ),
        dequant_hash: 0x8668b8fdc94f1d0c,
        dequant_head: [0xc07f5f00, 0xbfbf8740, 0xbfdf7320, 0xbf7f5f00],
        arb: concat!(
            "78ba9e6005ef29f78a06481d2d1326fb1a6f5baea40509cea7c0aa7df38a324fb1b9b4be0ed420b16a53e2095bfb78ed",
            "c7057cb1f2b00c88a5d3a089d46dcf8fdd4362ac98b403bad0b092a90da76492f99ef7d29c899ad9b1a144d50f0097f6",
            "36aaf89f5220d17956b412161f3023941c074aa2d55e8ee7bb88810f4fa1f4b580a4e3209cb98b77f3a23fe241daad5f",
            "19392308228baa39f3b1fbdac058d0a1e082e01008f66636fc7d5fba83911d35ffd2d649561767f67bd00ab7a7c47bc3",
            "df981241747e7199acb62ee0c44209864c22fefa473244f28e7567fbe38ab932fcad4c9a6300d31889fe07b1c47260ed",
            "9327e8acc0322f52affafc6452676999cd55e34f4869977be4c2cc58894c6a026ec7399b543e0c3dec24adb4c196966d",
            "ff4a364dadc09a7b12f0e9114fd6f7b3e149159cd716ac5b40803176f5e64b68d06e37d83a6b7b848f5212de70cf5123",
            "3e5eeb91a6f9f51cbbf6f791b81273aef0352142c08040ea538216a00ebb4966f688ac72dbf42e57d68aae9c45432af4",
            "6486886a624b3e5655d78a6b1b8a374fc1142fa7752a837db5b2a00d40e59d7f3680d191",
        ),
        arb_hash: 0xd5f15915927d2cd7,
        dot: Some((0x43e0bdc8, 0x43e0bdc8)),
    },
    Case {
        ty: GgmlType::Q5_K,
        format: &q5_k::Q5K,
        seed: 0x54,
        quant: concat!(
            "241c092cfdfffbfcfefff7f97bdcecdce692110ba758dd4e13860f2a88c1bad82b22ddf8270c671d22c72084fdbecce9",
            "502ad6fd69cf060ae8087cf6b33b2cb68137da5ff2a3ba35c9fd5f5d6f7345c2c2210daa4bc3656fa70a1372940e26f5",
            "89d31a5b33476565ffa0f0f53a7c41733b00f24e1eff42ec1ebba3990675aa08698ca0db31c5d394f71837bfc55cf042",
            "8dc395f02a59d4c80c8f05912fd0044f50e6676c1ea697d47364d9fdd0741a77bd20ff332136157f090b103f6c9d9f83",
            "ec4c1c8c7ccd7cac6c182e1c2cc8cc18883c2c78e40cac186c6c6c4c3c3c0c18574b6a554a1e5a762d77f883777d3544",
            "5978737985722b6b2446602b6f856856f59ac6949580b6dbc28bb7fda5ddc7a0efe3a27b09b49f88b7b1a6cbdb99a49c",
            "2c1e69ac42abad4e1cfe9be78ce7eff1bcb540c3fdea88cf10cdd96af1f7ebd48f91c7ffa13d9037d01dcdc98d9623b6",
            "840700c6224b0afae803b7e56cf6ddce3814830cfbc0fffe8000c1003d0afd0e08ccc844dc09c16cbd4c8c34e1bd0811",
            "c8448cd5f5b10c343cec79083139f4e10f010d0e050c0f0d030c030b090f0b0801050907070205090b05000205010000",
            "63ed403ea6914debe64afb41c465b13ef57275301249b23f9310c654c94dce9c8a9f9e8a57f83d476b27231af13fa9c1",
            "d71d6158f8d15689c0c6bc89594f2096d5eac85b7ac6bdd90c5039ee132ba6972d92f7e2fe0096bb065246974144d503",
            "1100ff00fefdf9f8fdfdf3ff99dceeff9426915d81c9a5ec31f3c73514f25ef96965eb524dbc54b20b1a2866a0064d97",
            "cb1ec4d4d8acce2404d387f808c3e13b3aeaa4a507f211588ae1f04d98a186da0ef75cb94720e5d98e09f346c9c5c4c0",
            "2afa3a4cd3eb9a349e2bacecf570d64a07aeda04d4c06aa7ec19b09a91bf4b4c7f55c1272bba07e1ece1e8e4a291b522",
            "1128c91e90802880bc12a925e074c4882d5ae1831618d99e6fa46359a3f3024d",
        ),
        dequant_hash: 0x3f5021b93fc8a105,
        dequant_head: [0xc07a2e00, 0xbfb8a300, 0x3fc23b00, 0x404f9e40],
        arb: concat!(
            "4c22d191fa7b93a0250cb5f985ed63cef7b5678594755a163b853e2a092b07d81bc86be8c73c85360cb9ae85a4764b3b",
            "47a305ee38dfd8a507be5fd797f610e2f8f872ceefbf69a6cedcfa94f280e956c7c6841c4f1e27f3e0b322ec0a0de42c",
            "fddbb0c79434f24f4f3051be45032f8497e3749ce1d67e10fba934b8bd686106a877f087c4d0ca101d13023bbbaca5cc",
            "33c0a1dcce9af6460ad95057929ee082f1451da0ee6f7ba51ad90723cf88aac500382102cf792515cb30c90dc694f1c2",
            "558bcdaeeea1ed8fc4121dc3bccc5d4186682cd3e46ce92c6f874b8d4a76b0c3a940ba66816e9a2449766265d6115f30",
            "e8cc10fcea5593e9970c7618c3622a88b51e8b48aad5df2d63cdf68f96271d78770df148b42f5d7554947e34dc02a773",
            "edb5e608052d55595b56373b8cb0c715190be52c0a87826f2cf443126bcd09a37311d870f981a717791bc4f2ba776d49",
            "048001cb7f037119647739c8d3f32d70",
        ),
        arb_hash: 0xb321b72344445583,
        dot: Some((0x41b787ec, 0x41b787eb)),
    },
    Case {
        ty: GgmlType::Q3_K,
        format: &q3_k::Q3K,
        seed: 0x55,
        quant: concat!(
            "e8caa20122f20f8803a77cb6eb519e7deababe55a554f34319ee86513e4cd3fffd6ffa6b330feca361ab32c7255e5787",
            "121ce9d0c79ca02c3ac25964beee4b854ecacf2a99fd5e178b4cce1cf33338297fa4b8f4a076b77a635b81d48908cdc6",
            "6098a8ab888a58860ccfff031ba99c4ee919fa9897f59bbcfe91e733781329eedfb6d3b04b1db5ecc8f535f2477db58a",
            "d9552d3c5a82141fbbf7ceba36410d03096830b7b079d20471cbecdabf517dcf0c0dae1f7d3a7f4a096667f9c4f1a3d3",
            "4c04cc31fffc60508fa040410351c2a96a08967c559ba54ad689c9aa0000800020000000000000140440080520200001",
            "101d00004080000000800000213212a2c061c32261d390c1410201c061f261c05200d3c20043a3130112605288782aad",
            "a39ad67752d94b1c1ccc542a71f266c25030e3858f216c592e0867f12314005022471102000002020a24779d25e1fd52",
            "ebadefefc84c946f4adc312c7eeffc37a0f58ea7decbd7c3a3b1f25dccabd353d0cbec7af00d46017d7fb207cfc39aee",
            "57df47d3a0563ba39f4ed137fcf22c9c95c09ec973d1cf467b9993ac58f470c75dfb97241e17834d34f865ab6ac99056",
            "a206003fc3339d80",
        ),
        dequant_hash: 0xfe54311af017dbea,
        dequant_head: [0xc0751000, 0xbfa36000, 0xc0236000, 0x40751000],
        arb: concat!(
            "bebc186a2bab891200787ece0f43967fffbdf69ca7ccb159c9ac9bced21550cc1ae08b1c3ddefb31fda3eda2139f0e6f",
            "ea263e5df40a6c71d3ea8c5afad010259848a6840273e737debc2691c44d768642d242dc4b5220bcd9c81ab1b5c424f6",
            "663a20302894ba45f4e3bb1f4c224a89eef2050cf98c29b6516fa9f861befb2b72f631aaac3caa1b32fd90af07c2eea2",
            "8515a3d63767181bea4898c34d69cedb5967b95f4da5bd97fdbc9335da10e51da9a72932ee80160eb9c9d85d11bbd68d",
            "72b43b783d19ef5c41c6d4eed0dea7f1fe06e4b3e3ae4f5c9af1d191",
        ),
        arb_hash: 0xfa3227f8183cd517,
        dot: Some((0x4376996c, 0x4376996b)),
    },
    Case {
        ty: GgmlType::Q2_K,
        format: &q2_k::Q2K,
        seed: 0x56,
        quant: concat!(
            "ebeeedcddbcbfec8bdbccebcffddaceb68c14a7e997175448eb42643d45285bb496503f9398a6549bda6dea742bb4ad0",
            "14b7280114768029685c72958324d1e0c746c2932dc4da6bc3345a2c599e365297313f34c3710f919161716151f27161",
            "516141516192815021f3f2c2b0d1e931b2b15171beb96a7f3faa631afeee828ea9ed5a287ca89bc907baca143cc36244",
            "d5febffc8aae873b92becbc5bef842ab9b533e1fd53908330e0e00000c0e5f0f0e0cee0dff0c0e2d319261e3b3b3b281",
            "f3c2b0f1333180a350c153e2e18241b1617301b2a14162629cdedaa13f0cd96dd492d9a57697aa2eb6711f6342d547b2",
            "eacf29edbff8ebafb3294b24de5adedfdeaceedfee7bed8bff7cdedbf32a431fac00f5bafa6ecb6623fdb0cdd47efd45",
            "ac075b03e7b022aa27d450bd1cbcb6ded83859f4a2d74fe544b19426ea2f905ae032b8d8165a00deca6b64ab84022704",
        ),
        dequant_hash: 0xf5e85fac88bc3c22,
        dequant_head: [0xc06dc800, 0xbfe59c00, 0x3e02c000, 0x3e02c000],
        arb: concat!(
            "ddbf5f23e058ca160f377fc48cc95d30484a521e1c9dd08fdce13a1f29f2c4afcab35682e59b60eb583cbb338675170f",
            "0b509f9e74752f2667c7ce2e5a796c20dec8f098f6328ed51242cfafaf1a38804c22d191929d74a20f3d7a5bf5bfa46e",
            "b0938d002b1f1f0bce675b2e8212828c62c4908e78af0cf3ae7cd323a83420efcbe86d37febb1752676a15a5959a031e",
            "2ac809b83638e188f6779572abd2cecfdcc5929800382102",
        ),
        arb_hash: 0xc06e25dcb86a91a4,
        dot: Some((0x431ef9a4, 0x431ef9a5)),
    },
];

fn f32_of(bits: u32) -> f32 {
    f32::from_bits(bits)
}

#[test]
fn quantize_matches_ggml() {
    for c in CASES {
        assert_eq!(c.format.ty(), c.ty);
        let x = gen_input(c.seed, NBLOCKS);
        let want = hex(c.quant);
        let mut got = vec![0u8; want.len()];
        c.format.quantize_row(&x, &mut got);
        for (b, (g, w)) in got
            .chunks(c.ty.block_bytes())
            .zip(want.chunks(c.ty.block_bytes()))
            .enumerate()
        {
            assert_eq!(g, w, "{}: block {b} differs from ggml", c.ty);
        }
        let mut fast = vec![0u8; want.len()];
        c.format.quantize_row_fast(&x, &mut fast);
        assert_eq!(fast, want, "{}: quantize_row_fast", c.ty);
        for (name, f) in c.format.quantize_variants() {
            let mut v = vec![0u8; want.len()];
            f(&x, &mut v);
            assert_eq!(v, want, "{}: quantize variant {name}", c.ty);
        }
    }
}

#[test]
fn act_row_matches_ggml() {
    let x = gen_input(ACT_SEED, NBLOCKS);
    let want = hex(ACT);
    let mut got = vec![0u8; want.len()];
    q8_k::Q8K.quantize_row(&x, &mut got);
    assert_eq!(got, want);
    for (name, f) in q8_k::Q8K.quantize_variants() {
        let mut v = vec![0u8; want.len()];
        f(&x, &mut v);
        assert_eq!(v, want, "Q8_K variant {name}");
    }
}

#[test]
fn dequantize_matches_ggml() {
    for c in CASES {
        let q = hex(c.quant);
        let mut y = vec![0f32; NBLOCKS * QK_K];
        c.format.dequantize_row(&q, &mut y);
        let head: Vec<u32> = y[..4].iter().map(|v| v.to_bits()).collect();
        assert_eq!(head, c.dequant_head, "{}: first values", c.ty);
        assert_eq!(
            fnv1a64(&y),
            c.dequant_hash,
            "{}: dequantized blocks differ from ggml",
            c.ty
        );

        let arb = hex(c.arb);
        let mut y = vec![0f32; arb.len() / c.ty.block_bytes() * QK_K];
        c.format.dequantize_row(&arb, &mut y);
        assert_eq!(
            fnv1a64(&y),
            c.arb_hash,
            "{}: arbitrary blocks differ from ggml",
            c.ty
        );
    }
}

#[test]
fn vec_dot_matches_ggml() {
    let act = hex(ACT);
    let n = NBLOCKS * QK_K;
    for c in CASES {
        let Some((avx2, generic)) = c.dot else {
            continue;
        };
        let (want, want_generic) = (f32_of(avx2), f32_of(generic));
        assert!(
            (want - want_generic).abs() <= 1e-4 * want.abs(),
            "{}: ggml disagrees with itself",
            c.ty
        );
        let w = hex(c.quant);
        let scalar = c.format.vec_dot_scalar()(n, &w, &act);
        for (name, f) in c.format.vec_dot_variants() {
            let got = f(n, &w, &act);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs(),
                "{} {name}: {got} vs ggml {want}",
                c.ty
            );
            assert!(
                (got - scalar).abs() <= 1e-5 * scalar.abs(),
                "{} {name}: {got} vs scalar {scalar}",
                c.ty
            );
        }
        assert_eq!(c.format.act_type(), GgmlType::Q8_K);
    }
}

//! Many users of one model: two `hearth serve --threads 1` replicas behind a real nginx
//! (deploy/nginx/hearth.conf with this test's ports), sharing one read-only model store
//! (HEARTH_MODELS) while each keeps its ledger in its own HEARTH_HOME. The official `openai`
//! Python client (tests/clients/replicas_clients.py) checks sticky conversations and their
//! prefix reuse, measures one replica against two, and counts every request while this test
//! kills a replica under load. nginx missing fails the test, with how to install it.

#[path = "common/serve.rs"]
#[allow(dead_code)]
mod serve;
#[path = "common/venv.rs"]
#[allow(dead_code)]
mod venv;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const REPLICAS: usize = 2;

/// The model's name in the shared store.
const MODEL: &str = "smollm2";

fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Debian puts nginx in /usr/sbin, which is not on every user's PATH.
fn nginx_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed, and this test runs hearth replicas behind a real nginx. \
                 Install Debian's package: `apt-get install nginx` (.ci/run does)"
            )
        })
}

/// nginx as a child process with everything (config, pid, logs, temp files) in `dir`.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// A port free now (the listener is closed when it returns; nginx binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// The project's nginx config with this test's replicas and port, plus a second server on
/// `single_port` in front of the first replica alone (the throughput baseline), inside the
/// process-level settings of a child that writes only under `dir`.
fn nginx_config(dir: &Path, replicas: &[String], pool_port: u16, single_port: u16) -> String {
    let shipped_path = workspace_file("deploy/nginx/hearth.conf");
    let shipped = std::fs::read_to_string(&shipped_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", shipped_path.display()));
    let shape = |what: &str| -> ! {
        panic!(
            "{} no longer has {what}: update this test with it",
            shipped_path.display()
        )
    };
    let mut http = String::new();
    let mut servers_written = false;
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("server 127.0.0.1:") {
            // The example replicas become this test's (with the same options).
            let options = trimmed.split_once(' ').map_or("", |(_, rest)| rest);
            let options = options.split_once(' ').map_or(";", |(_, rest)| rest);
            if !servers_written {
                for addr in replicas {
                    http.push_str(&format!("    server {addr} {options}\n"));
                }
                servers_written = true;
            }
        } else if trimmed.starts_with("listen ") {
            http.push_str(&format!("    listen 127.0.0.1:{pool_port};\n"));
        } else {
            http.push_str(line);
            http.push('\n');
        }
    }
    if !servers_written {
        shape("`server 127.0.0.1:…` lines in its upstream");
    }
    let server_block = http
        .find("\nserver {")
        .map(|i| http[i..].to_owned())
        .unwrap_or_else(|| shape("a `server {` block after the upstream"));
    if !server_block.contains("proxy_pass http://hearth;") {
        shape("`proxy_pass http://hearth;`");
    }
    let single = server_block
        .replace("proxy_pass http://hearth;", "proxy_pass http://hearth_one;")
        .replace(
            &format!("listen 127.0.0.1:{pool_port};"),
            &format!("listen 127.0.0.1:{single_port};"),
        );
    let d = dir.display();
    format!(
        "# Written by crates/cli/tests/replicas_nginx.rs.\n\
         # One process in the foreground, so that the test can stop it (production runs\n\
         # nginx's master and workers as usual).\n\
         daemon off;\n\
         master_process off;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         access_log {d}/access.log;\n\
         client_body_temp_path {d}/client_body;\n\
         proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         \n{http}\n\
         upstream hearth_one {{\n    server {first};\n    keepalive 16;\n}}\n\
         {single}\n\
         }}\n",
        first = replicas[0],
    )
}

fn start_nginx(dir: &Path, config: &str, ports: &[u16]) -> Nginx {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).expect("write nginx.conf");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut nginx = Nginx {
        child,
        dir: dir.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ports
        .iter()
        .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
    {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            panic!(
                "nginx exited ({status}):\n{}\nconfig:\n{config}",
                nginx.error_log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "nginx does not listen on {ports:?}:\n{}",
            nginx.error_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}

/// Every entry under `root`: path, whether a directory, size, modification time.
type Snapshot = Vec<(PathBuf, bool, u64, SystemTime)>;

fn snapshot(root: &Path) -> Snapshot {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the store") {
            let entry = entry.expect("read the store");
            let meta = entry.metadata().expect("stat in the store");
            let path = entry.path();
            if meta.is_dir() {
                dirs.push(path.clone());
            }
            out.push((
                path,
                meta.is_dir(),
                meta.len(),
                meta.modified().expect("mtime"),
            ));
        }
    }
    out.sort();
    out
}

/// Takes write permission away under `root` (for everyone but root, who ignores it; the
/// snapshot comparison then proves nothing was written) and gives it back when dropped, so
/// that the temporary directory can be removed.
struct ReadOnlyTree(PathBuf);

fn set_writable(root: &Path, writable: bool) {
    for (path, is_dir, _, _) in
        snapshot(root)
            .into_iter()
            .chain([(root.to_owned(), true, 0, SystemTime::UNIX_EPOCH)])
    {
        let mode = match (is_dir, writable) {
            (true, true) => 0o755,
            (true, false) => 0o555,
            (false, true) => 0o644,
            (false, false) => 0o444,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
}

impl Drop for ReadOnlyTree {
    fn drop(&mut self) {
        set_writable(&self.0, true);
    }
}

#[test]
fn replicas_behind_nginx_share_a_read_only_store() {
    let nginx_bin = nginx_binary();
    let model = testutil::smollm2();
    let python = venv::openai_and_ollama();
    let tmp = tempfile::tempdir().unwrap();

    // One store with the model, then read-only for the replicas.
    let store = tmp.path().join("store");
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["create", MODEL, "--from"])
        .arg(&model)
        .env("HEARTH_HOME", tmp.path().join("admin"))
        .env("HEARTH_MODELS", &store)
        .output()
        .expect("run hearth create");
    assert!(
        out.status.success(),
        "hearth create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_writable(&store, false);
    let _restore = ReadOnlyTree(store.clone());
    let before = snapshot(&store);

    let homes: Vec<PathBuf> = (0..REPLICAS)
        .map(|i| tmp.path().join(format!("replica-{i}")))
        .collect();
    let mut replicas: Vec<serve::Server> = homes
        .iter()
        .map(|home| {
            serve::start_with_threads(
                1,
                &["--read-only-store"],
                &[
                    ("HEARTH_HOME", home.as_os_str()),
                    ("HEARTH_MODELS", store.as_os_str()),
                    ("HEARTH_OFFLINE", std::ffi::OsStr::new("1")),
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = replicas
        .iter()
        .map(|r| r.base.trim_start_matches("http://").to_owned())
        .collect();

    let nginx_dir = tmp.path().join("nginx");
    std::fs::create_dir(&nginx_dir).unwrap();
    let (pool_port, single_port) = (free_port(), free_port());
    let config = nginx_config(&nginx_dir, &addrs, pool_port, single_port);
    eprintln!("nginx: {}", nginx_bin.display());
    let nginx = start_nginx(&nginx_dir, &config, &[pool_port, single_port]);

    let script = workspace_file("tests/clients/replicas_clients.py");
    let mut client = Command::new(&python)
        .arg(&script)
        .arg(format!("http://127.0.0.1:{pool_port}"))
        .arg(format!("http://127.0.0.1:{single_port}"))
        .arg(MODEL)
        .args(replicas.iter().map(|r| &r.base))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the client script");
    let mut to_client = client.stdin.take().expect("piped stdin");
    let stderr = client.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut stdout = String::new();
    let mut killed = Vec::new();
    for line in BufReader::new(client.stdout.take().expect("piped stdout"))
        .lines()
        .map_while(Result::ok)
    {
        eprintln!("[client] {line}");
        if let Some(victim) = line.strip_prefix("KILL ") {
            let i = addrs
                .iter()
                .position(|a| a == victim.trim())
                .unwrap_or_else(|| panic!("the client asks to kill {victim}, not a replica"));
            let child = &mut replicas[i].child;
            child.kill().expect("kill the replica");
            child.wait().expect("reap the replica");
            killed.push(i);
            writeln!(to_client, "killed").expect("tell the client");
        }
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let status = client.wait().expect("wait for the client script");
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        status.success() && stdout.contains("all replica checks passed"),
        "{} failed ({status}):\n{stdout}\nstderr:\n{stderr}\nnginx error log:\n{}",
        script.display(),
        nginx.error_log()
    );
    assert_eq!(killed.len(), 1, "one replica was killed under load");

    // The store is as it was; each replica wrote its ledger in its own home.
    assert_eq!(
        snapshot(&store),
        before,
        "a replica wrote to the shared store"
    );
    for home in &homes {
        assert!(
            home.join(ledger::LEDGER_FILE).is_file(),
            "no ledger in {}",
            home.display()
        );
    }
}

/// docs/DEPLOY.md shows the nginx config this test runs, not an older copy of it.
#[test]
fn the_deploy_guide_shows_the_config_the_test_runs() {
    let shipped = std::fs::read_to_string(workspace_file("deploy/nginx/hearth.conf"))
        .expect("read deploy/nginx/hearth.conf");
    let guide = std::fs::read_to_string(workspace_file("docs/DEPLOY.md")).expect("read DEPLOY.md");
    let body = shipped
        .find("upstream hearth {")
        .map(|i| shipped[i..].trim_end())
        .expect("an upstream block in deploy/nginx/hearth.conf");
    assert!(
        guide.contains(body),
        "docs/DEPLOY.md does not show deploy/nginx/hearth.conf as it is (from `upstream hearth {{` \
         on): copy it there again"
    );
}

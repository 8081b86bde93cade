//! Build contexts: the packed tar (entries, modes, links, determinism, pruning, streaming)
//! and, against the real daemon, the proof that slipway sends what `docker build` sends: to
//! the classic builder (`DOCKER_BUILDKIT=0 docker build`) and to BuildKit (`docker buildx
//! build`).

mod common;

use common::RunRetrying as _;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use slipway::context::{self, Builder, ContextSpec, Packed, OUTSIDE_DOCKERFILE};

/// Writes `files` under `root`: a path ending in `/` is a directory, `-> target` a symlink,
/// `*` after the content makes the file executable.
fn tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path.trim_end_matches('/'));
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        if path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
        } else if let Some(target) = content.strip_prefix("-> ") {
            symlink(target, &p).unwrap();
        } else if let Some(body) = content.strip_suffix('*') {
            fs::write(&p, body).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            fs::write(&p, content).unwrap();
        }
    }
}

fn spec(dir: &Path) -> ContextSpec {
    ContextSpec {
        dir: dir.to_path_buf(),
        dockerfile: dir.join("Dockerfile"),
        ignore_file: None,
        source_date_epoch: Some(1_700_000_000),
        builder: Builder::BuildKit,
        leave_out: vec![],
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    link: String,
    content: Vec<u8>,
    mtime: u64,
    uid: u64,
}

fn pack_entries(spec: &ContextSpec) -> (Packed, Vec<u8>, Vec<(String, Entry)>) {
    let mut bytes = Vec::new();
    let packed = context::pack(spec, &mut bytes).unwrap();
    let entries = read_tar(&bytes);
    (packed, bytes, entries)
}

fn read_tar(bytes: &[u8]) -> Vec<(String, Entry)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            other => panic!("unexpected entry type {other:?}"),
        };
        assert_eq!(h.username_bytes(), Some(&b""[..]), "no user names");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "no group names");
        out.push((
            name,
            Entry {
                kind,
                mode: h.mode().unwrap(),
                link,
                content,
                mtime: h.mtime().unwrap(),
                uid: h.uid().unwrap() + h.gid().unwrap(),
            },
        ));
    }
    out
}

fn names(entries: &[(String, Entry)]) -> Vec<&str> {
    entries.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn sends_what_the_dockerignore_leaves_in_depth_first_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            (
                ".dockerignore",
                "# comment\n*.log\n!keep.log\nnode_modules\n/build/\ndocs/**/*.tmp\n",
            ),
            ("app.py", "print(1)\n"),
            ("run.sh", "#!/bin/sh\n*"),
            ("a.log", "x"),
            ("keep.log", "kept"),
            ("node_modules/x/index.js", "x"),
            ("build/out.o", "o"),
            ("docs/a/b.tmp", "t"),
            ("docs/a/b.md", "m"),
            ("a/b", "nested"),
            ("a.txt", "dot sorts before slash"),
            ("link", "-> app.py"),
            ("outside", "-> /etc/passwd"),
        ],
    );
    let (packed, _, entries) = pack_entries(&spec(dir.path()));
    assert_eq!(
        names(&entries),
        [
            ".dockerignore",
            "Dockerfile",
            "a/",
            "a/b",
            "a.txt",
            "app.py",
            "docs/",
            "docs/a/",
            "docs/a/b.md",
            "keep.log",
            "link",
            "outside",
            "run.sh",
        ]
    );
    let by_name: BTreeMap<_, _> = entries.into_iter().collect();
    assert_eq!(by_name["run.sh"].mode, 0o755);
    assert_eq!(by_name["app.py"].mode, 0o644);
    assert_eq!(by_name["link"].kind, 'l');
    assert_eq!(by_name["link"].link, "app.py");
    assert_eq!(
        by_name["outside"].link, "/etc/passwd",
        "symlinks are stored, not followed"
    );
    assert!(by_name
        .values()
        .all(|e| e.mtime == 1_700_000_000 && e.uid == 0));
    assert_eq!(packed.dockerfile_name, "Dockerfile");
    assert_eq!(packed.files, 10);
    assert_eq!(packed.dirs, 3);
    assert!(packed.warnings.is_empty());
}

#[test]
fn an_ignored_dockerfile_is_sent_and_the_ignore_file_only_to_the_classic_builder() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("docker/app.Dockerfile", "FROM scratch\n"),
            (".dockerignore", ".dockerignore\ndocker\n*.Dockerfile\n"),
            ("docker/other", "x"),
            ("main.go", "package main"),
        ],
    );
    let mut s = spec(dir.path());
    s.dockerfile = dir.path().join("docker/app.Dockerfile");
    // BuildKit gets the Dockerfile apart over its session: the context is the filtered set.
    let (packed, _, entries) = pack_entries(&s);
    assert_eq!(names(&entries), ["main.go"]);
    assert_eq!(packed.dockerfile_name, "app.Dockerfile");

    s.builder = Builder::Classic;
    let (packed, _, entries) = pack_entries(&s);
    assert_eq!(
        names(&entries),
        [
            ".dockerignore",
            "docker/",
            "docker/app.Dockerfile",
            "main.go"
        ]
    );
    assert_eq!(packed.dockerfile_name, "docker/app.Dockerfile");
}

#[test]
fn a_dockerfile_outside_the_context_stays_out_of_it_or_gets_a_fixed_name_for_the_classic_builder() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    tree(
        dir.path(),
        &[("Dockerfile", "FROM scratch\n"), ("ctx/main.go", "x")],
    );
    let mut s = ContextSpec {
        dir: ctx.clone(),
        dockerfile: dir.path().join("Dockerfile"),
        source_date_epoch: Some(0),
        ..Default::default()
    };
    // BuildKit gets the Dockerfile apart over its session: nothing is added to the context.
    let (packed, _, entries) = pack_entries(&s);
    assert_eq!(packed.dockerfile_name, "Dockerfile");
    assert_eq!(names(&entries), ["main.go"]);

    // For the classic builder the name goes into the tar's .dockerignore, so the daemon
    // drops the file before any COPY (what the docker CLI does).
    s.builder = Builder::Classic;
    let (_, _, entries) = pack_entries(&s);
    assert_eq!(
        names(&entries),
        [".dockerignore", OUTSIDE_DOCKERFILE, "main.go"]
    );
    assert_eq!(
        String::from_utf8_lossy(&entries[0].1.content),
        format!(".dockerignore\n{OUTSIDE_DOCKERFILE}\n")
    );
    // An existing .dockerignore keeps its rules and gains the name.
    fs::write(ctx.join(".dockerignore"), "*.md").unwrap();
    fs::write(ctx.join("README.md"), "x").unwrap();
    let (_, _, entries) = pack_entries(&s);
    assert_eq!(
        names(&entries),
        [".dockerignore", OUTSIDE_DOCKERFILE, "main.go"]
    );
    assert_eq!(
        String::from_utf8_lossy(&entries[0].1.content),
        format!("*.md\n{OUTSIDE_DOCKERFILE}\n")
    );

    // A context file with the reserved name is refused, unless it is ignored.
    fs::write(ctx.join(OUTSIDE_DOCKERFILE), "mine").unwrap();
    let err = format!("{:#}", context::digest(&s).unwrap_err());
    assert!(err.contains(OUTSIDE_DOCKERFILE), "{err}");
    fs::write(ctx.join(".dockerignore"), OUTSIDE_DOCKERFILE).unwrap();
    let (_, _, entries) = pack_entries(&s);
    assert_eq!(entries[1].1.content, b"FROM scratch\n");
}

#[test]
fn same_tree_same_bytes_whatever_the_creation_order_and_mtimes() {
    let files: Vec<(String, String)> = (0..40)
        .map(|i| (format!("d{}/f{i}.txt", i % 7), format!("content {i}\n")))
        .collect();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (p, c) in &files {
        tree(a.path(), &[(p, c)]);
    }
    for (p, c) in files.iter().rev() {
        tree(b.path(), &[(p, c)]);
    }
    for d in [a.path(), b.path()] {
        tree(d, &[("Dockerfile", "FROM scratch\n"), ("x.sh", "x*")]);
    }
    // Different mtimes on one side.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    for (p, _) in &files {
        fs::File::options()
            .write(true)
            .open(b.path().join(p))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let (pa, bytes_a, _) = pack_entries(&spec(a.path()));
    let (pb, bytes_b, _) = pack_entries(&spec(b.path()));
    assert_eq!(bytes_a, bytes_b);
    assert_eq!(pa.sha256, pb.sha256);
    assert_eq!(context::digest(&spec(a.path())).unwrap(), pa);

    // Without SOURCE_DATE_EPOCH real mtimes are kept, so the digest differs.
    let mut sa = spec(a.path());
    sa.source_date_epoch = None;
    let mut sb = spec(b.path());
    sb.source_date_epoch = None;
    assert_ne!(
        context::digest(&sa).unwrap().sha256,
        context::digest(&sb).unwrap().sha256
    );
    // A content change changes the digest.
    fs::write(a.path().join("d0/f0.txt"), "changed").unwrap();
    assert_ne!(context::digest(&spec(a.path())).unwrap().sha256, pb.sha256);
}

#[test]
fn excluded_directories_no_exception_can_reach_are_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "node_modules\n!src/**/keep\n"),
            ("src/a/keep", "k"),
        ],
    );
    for i in 0..50 {
        tree(
            dir.path(),
            &[(&format!("node_modules/p{i}/lib/index.js"), "x")],
        );
    }
    let (packed, _, entries) = pack_entries(&spec(dir.path()));
    assert!(names(&entries)
        .iter()
        .all(|n| !n.starts_with("node_modules")));
    // Only the root, src and src/a are listed.
    assert_eq!(packed.dirs_read, 3);

    // An exception that can match anywhere forces the walk (and changes nothing else).
    fs::write(dir.path().join(".dockerignore"), "node_modules\n!**/keep\n").unwrap();
    let (packed, _, _) = pack_entries(&spec(dir.path()));
    assert_eq!(packed.dirs_read, 3 + 1 + 50 * 2);
}

#[test]
fn long_and_non_utf8_names_round_trip() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), &[("Dockerfile", "FROM scratch\n")]);
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    tree(dir.path(), &[(&long, "long")]);
    let raw = OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(dir.path().join(raw), "latin-1").unwrap();
    symlink("t".repeat(200), dir.path().join("longlink")).unwrap();
    let mut bytes = Vec::new();
    context::pack(&spec(dir.path()), &mut bytes).unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut seen = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        seen.push((
            e.path_bytes().into_owned(),
            e.link_name_bytes().map(|l| l.into_owned()),
        ));
    }
    assert!(seen.iter().any(|(p, _)| p == long.as_bytes()));
    assert!(seen.iter().any(|(p, _)| p == b"caf\xe9.txt"));
    assert!(seen
        .iter()
        .any(|(p, l)| p == b"longlink" && l.as_deref() == Some("t".repeat(200).as_bytes())));
}

#[test]
fn hard_links_are_links_to_the_first_path_sent() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[("Dockerfile", "FROM scratch\n"), ("a", "same")],
    );
    fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
    let (_, _, entries) = pack_entries(&spec(dir.path()));
    let b = &entries.iter().find(|(n, _)| n == "b").unwrap().1;
    assert_eq!((b.kind, b.link.as_str()), ('h', "a"));
}

#[test]
fn sockets_and_fifos_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), &[("Dockerfile", "FROM scratch\n")]);
    let fifo = dir.path().join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
    let (packed, _, entries) = pack_entries(&spec(dir.path()));
    assert_eq!(names(&entries), ["Dockerfile"]);
    assert_eq!(packed.warnings.len(), 2, "{:?}", packed.warnings);
    assert!(packed.warnings[0].contains("FIFO pipe"));
    assert!(packed.warnings[1].contains("socket sock"));
}

#[test]
fn bad_pattern_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "ok\n[z-a]\n"),
        ],
    );
    let err = context::digest(&spec(dir.path())).unwrap_err();
    let chain = format!("{err:#}");
    assert!(chain.contains(".dockerignore:2"), "{chain}");
    assert!(chain.contains("[z-a]"), "{chain}");
}

#[tokio::test]
async fn stream_yields_the_same_bytes_as_pack() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), &[("Dockerfile", "FROM scratch\n")]);
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    fs::write(dir.path().join("big.bin"), &big).unwrap();
    let (_, bytes, _) = pack_entries(&spec(dir.path()));
    let (mut stream, handle) = context::pack_stream(spec(dir.path()));
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= context::CHUNK);
        got.extend_from_slice(&chunk);
    }
    let packed = handle.await.unwrap().unwrap();
    assert_eq!(got, bytes);
    assert_eq!(packed.bytes, bytes.len() as u64);
}

#[tokio::test]
async fn stream_ends_with_an_error_when_packing_fails() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let s = ContextSpec {
        dir: dir.path().to_path_buf(),
        dockerfile: PathBuf::from("/nonexistent/Dockerfile"),
        ..Default::default()
    };
    let (stream, handle) = context::pack_stream(s);
    let items: Vec<_> = stream.collect().await;
    assert!(items.last().unwrap().is_err());
    assert!(handle.await.unwrap().is_err());
}

// ---------------------------------------------------------------------------------------------
// Against the real daemon: the docker CLI's own packing vs slipway's.

/// The busybox base image the harness builds (`scripts/env/images busybox`), or `None` (with
/// a printed reason) outside CI. Under `CI=true` a missing image fails the test.
async fn busybox(docker: &bollard::Docker) -> Option<String> {
    let image = std::env::var("SLIPWAY_TEST_IMAGE_BUSYBOX")
        .unwrap_or_else(|_| "slipway-test/busybox:1.35".to_string());
    if docker.inspect_image(&image).await.is_ok() {
        return Some(image);
    }
    if common::in_ci() {
        panic!("CI=true and the base image {image} is missing: run scripts/env/images busybox");
    }
    eprintln!("SKIPPED: base image {image} missing (run scripts/env/images busybox)");
    None
}

/// Removes the images a test tagged (on the daemon at the given DOCKER_HOST), even when it
/// panics.
struct Images(Vec<String>, String);

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = std::process::Command::new("docker")
                .env("DOCKER_HOST", &self.1)
                .args(["rmi", "-f", tag])
                .output();
        }
    }
}

/// `path|mode|type|symlink target|size|links` of everything under /ctx in `image`, and the md5 of
/// every regular file, one per line, sorted.
fn listing(image: &str) -> Vec<String> {
    listing_on(&slipway::docker::endpoint().host, image)
}

/// [`listing`] on the daemon at `host`.
fn listing_on(host: &str, image: &str) -> Vec<String> {
    let mut docker = std::process::Command::new("docker");
    docker.env("DOCKER_HOST", host);
    let out = docker
        .args([
            "run",
            "--rm",
            "--name",
            &common::unique("slipway-ctx-ls"),
            image,
        ])
        .args([
            "sh",
            "-c",
            "find /ctx -exec stat -c '%n|%a|%F|%N|%s|%h' {} + && find /ctx -type f -exec md5sum {} +",
        ])
        .output_retrying()
        .expect("docker run");
    assert!(
        out.status.success(),
        "listing {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// A tree with the patterns and file kinds where packers tend to differ.
fn tricky_tree(root: &Path) {
    tree(
        root,
        &[
            ("Dockerfile", "FROM BASE\nCOPY . /ctx\n"),
            (
                ".dockerignore",
                "# a comment, then tricky patterns\n\
                 *.log\n\
                 !important.log\n\
                 **/*.tmp\n\
                 node_modules\n\
                 /build/\n\
                 ./dist\n\
                 docs/**\n\
                 !docs/keep/**\n\
                 secret?.txt\n\
                 [abc]x.txt\n\
                 cache[^0-9]\n\
                 vendor\n\
                 !vendor/keep\n\
                 **/deep/*.bin\n\
                 !**/deep/ok.bin\n\
                 sub/dir with space\n\
                 \\#hash\n\
                 \u{20}\u{20}padded.txt  \n\
                 nested/../collapsed\n\
                 pkg/*/generated\n\
                 Dockerfile\n\
                 .dockerignore\n",
            ),
            ("app.py", "print('hi')\n"),
            ("run.sh", "#!/bin/sh\necho hi\n*"),
            ("a.log", "x"),
            ("important.log", "kept"),
            ("sub/x.log", "kept: `*.log` only matches at the top"),
            ("sub/y.tmp", "x"),
            ("sub/z.txt", "kept"),
            ("sub/dir with space/f", "x"),
            ("sub/dir with space2/f", "kept"),
            ("sub/.dockerignore", "*\n"),
            ("node_modules/pkg/index.js", "x"),
            (
                "web/node_modules/pkg/index.js",
                "kept: only the top-level one is named",
            ),
            ("build/out.o", "x"),
            ("src/build/keep.c", "kept"),
            ("dist/bundle.js", "x"),
            ("docs/README.md", "x"),
            ("docs/keep/a.md", "kept"),
            ("docs/keep/deeper/b.md", "kept"),
            ("secret1.txt", "x"),
            ("secret12.txt", "kept"),
            ("ax.txt", "x"),
            ("dx.txt", "kept"),
            ("cachex", "x"),
            ("cache1", "kept"),
            ("vendor/other/lib.go", "x"),
            ("vendor/keep/lib.go", "kept"),
            ("x/deep/a.bin", "x"),
            ("x/deep/ok.bin", "kept"),
            ("x/y/deep/ok.bin", "kept"),
            ("#hash", "x"),
            ("padded.txt", "x"),
            ("collapsed", "x"),
            ("pkg/a/generated/g.go", "x"),
            ("pkg/a/src.go", "kept"),
            ("empty/", ""),
            ("link-rel", "-> app.py"),
            ("link-abs", "-> /etc/hostname"),
            ("link-dangling", "-> does/not/exist"),
            ("link-dir", "-> sub"),
            ("modes/private", "secret-ish"),
            ("modes/group", "g"),
            ("modes/tool", "t*"),
            ("modes/privdir/f", "f"),
            (
                &format!("long/{}/{}", "d".repeat(90), "f".repeat(120)),
                "long path",
            ),
        ],
    );
    fs::set_permissions(
        root.join("modes/private"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(root.join("modes/group"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(
        root.join("modes/privdir"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    fs::hard_link(root.join("app.py"), root.join("app-hardlink.py")).unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"latin1-caf\xe9.txt");
        fs::write(root.join(name), "non-UTF-8 name").unwrap();
    }
}

/// A temporary directory holding `ctx/`: the [`tricky_tree`] and a Dockerfile that copies it
/// whole onto `base` (`COPY . /ctx`).
fn tricky_context(base: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ctx");
    fs::create_dir(&root).unwrap();
    tricky_tree(&root);
    fs::write(
        root.join("Dockerfile"),
        format!("FROM {base}\nCOPY . /ctx\n"),
    )
    .unwrap();
    (dir, root)
}

/// The proof the issue asks for: the set of paths, modes and symlink targets in an image that
/// does `COPY . /ctx` is the same whether the docker CLI's legacy builder packed the context
/// or slipway did. (The one known classic/BuildKit difference is left out here; it is tested
/// in `ignore::tests::buildkit_exception_under_wildcard_dir`.)
#[tokio::test]
async fn docker_cli_and_slipway_send_the_same_context() {
    use futures_util::StreamExt;

    let Some(docker) = common::daemon().await else {
        return;
    };
    let Some(base) = busybox(&docker).await else {
        return;
    };
    let (_dir, root) = tricky_context(&base);

    let cli_tag = format!("{}:cli", common::unique("slipway-test/ctx"));
    let ours_tag = format!("{}:slipway", common::unique("slipway-test/ctx"));
    let _cleanup = Images(
        vec![cli_tag.clone(), ours_tag.clone()],
        slipway::docker::endpoint().host,
    );

    // (1) The docker CLI packs the context itself (classic builder).
    let out = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &cli_tag])
        .arg(&root)
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // (2) slipway packs it and streams it to the same builder.
    let mut spec = spec(&root);
    spec.source_date_epoch = None;
    spec.builder = Builder::Classic;
    let (body, packer) = context::pack_stream(spec);
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&ours_tag)
        .rm(true)
        .forcerm(true)
        .version(bollard::query_parameters::BuilderVersion::BuilderV1)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_try_stream(body)));
    while let Some(item) = stream.next().await {
        let info = item.expect("slipway build");
        assert!(
            info.error_detail.is_none(),
            "slipway build: {:?}",
            info.error_detail
        );
    }
    let packed = packer.await.unwrap().unwrap();
    assert_eq!(packed.dockerfile_name, "Dockerfile");

    let cli = listing(&cli_tag);
    let ours = listing(&ours_tag);
    if std::env::var_os("SLIPWAY_SHOW_LISTING").is_some() {
        eprintln!("{}", ours.join("\n"));
    }
    assert_eq!(ours, cli, "slipway's context differs from the docker CLI's");

    // And the fixture really exercised the rules.
    let has = |p: &str| cli.iter().any(|l| l.starts_with(&format!("/ctx/{p}|")));
    for kept in [
        "important.log",
        "sub/x.log",
        "sub/z.txt",
        "sub/dir with space2/f",
        "web/node_modules/pkg/index.js",
        "src/build/keep.c",
        "docs/keep/deeper/b.md",
        "secret12.txt",
        "dx.txt",
        "cache1",
        "vendor/keep/lib.go",
        "x/deep/ok.bin",
        "x/y/deep/ok.bin",
        "pkg/a/src.go",
        "empty",
        "link-dangling",
        "modes/privdir/f",
    ] {
        assert!(
            has(kept),
            "{kept} should be in the image:\n{}",
            cli.join("\n")
        );
    }
    for gone in [
        "a.log",
        "sub/y.tmp",
        "sub/dir with space/f",
        "node_modules",
        "build",
        "dist",
        "docs/README.md",
        "secret1.txt",
        "ax.txt",
        "cachex",
        "vendor/other",
        "x/deep/a.bin",
        "#hash",
        "padded.txt",
        "collapsed",
        "pkg/a/generated",
        "Dockerfile",
        ".dockerignore",
    ] {
        assert!(!has(gone), "{gone} should not be in the image");
    }
    assert!(cli
        .iter()
        .any(|l| l == "/ctx/modes/private|600|regular file|/ctx/modes/private|10|1"));
    // The hard link survives as one (docker stores a hard link; so does slipway).
    assert!(cli
        .iter()
        .any(|l| l.starts_with("/ctx/app-hardlink.py|644|regular file|") && l.ends_with("|2")));
    assert!(cli
        .iter()
        .any(|l| l.contains("'/ctx/link-abs' -> '/etc/hostname'")));
}

/// The same proof against BuildKit (issue 14): what `COPY . /ctx` sees is the same whether
/// the docker CLI's `docker buildx build` sent the context (buildx 0.13 and its own
/// `.dockerignore` reading) or `slipway build` did, on the same daemon's BuildKit.
#[tokio::test]
async fn docker_buildx_and_slipway_send_buildkit_the_same_context() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let Some(base) = busybox(&docker).await else {
        return;
    };
    let buildx = std::process::Command::new("docker")
        .args(["buildx", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !buildx {
        assert!(
            !common::in_ci(),
            "CI=true and the docker CLI has no buildx plugin: run scripts/env/setup"
        );
        eprintln!("SKIPPED: no docker buildx");
        return;
    }
    let (dir, root) = tricky_context(&base);
    let prefix = common::unique("slipway-test/ctxbk");
    fs::write(
        dir.path().join("slipway.toml"),
        format!(
            "[app]\nname = \"ctxbk\"\n[images]\nprefix = \"{prefix}\"\n\
             [components.ctx]\ncontext = \"ctx\"\ndockerfile = \"ctx/Dockerfile\"\nport = 80\n"
        ),
    )
    .unwrap();
    let cli_tag = format!("{prefix}/cli:bk");

    let out = std::process::Command::new("docker")
        .args(["buildx", "build", "--load", "-q", "-t", &cli_tag])
        .arg(&root)
        .output()
        .expect("docker buildx build");
    assert!(
        out.status.success(),
        "docker buildx build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = common::slipway()
        .current_dir(dir.path())
        .args(["build", "--progress", "plain"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "slipway build: {stderr}");
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(".slipway/last-build.json")).unwrap())
            .unwrap();
    let ours_tag = record["components"]["ctx"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let tags = record["components"]["ctx"]["tags"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut all: Vec<String> = tags
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    all.extend([cli_tag.clone(), ours_tag.clone()]);
    let _cleanup = Images(all, slipway::docker::endpoint().host);
    assert!(
        stderr.contains("[internal] load build definition"),
        "slipway did not build with BuildKit: {stderr}"
    );

    let cli = listing(&cli_tag);
    let ours = listing(&ours_tag);
    assert_eq!(ours, cli, "slipway's context differs from docker buildx's");
    // The fixture exercised the rules: kept and ignored paths both.
    let has = |p: &str| cli.iter().any(|l| l.starts_with(&format!("/ctx/{p}|")));
    assert!(has("important.log") && has("sub/x.log") && has("modes/privdir/f"));
    assert!(!has("a.log") && !has("node_modules") && !has("secret1.txt"));
}

/// The daemon's BuildKit copies an uploaded tar as it is (no second `.dockerignore` pass, no
/// Dockerfile removal), so what slipway packs for BuildKit is exactly what `COPY .` sees —
/// including BuildKit's answer for an exception under a wildcard directory.
#[tokio::test]
async fn buildkit_copies_exactly_what_slipway_packed() {
    use futures_util::StreamExt;
    use slipway::docker::session::{self, Providers, Session};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ctx");
    tree(
        &root,
        &[
            (
                ".dockerignore",
                ".dockerignore\nignored.txt\nvendor\n!vendor/*/LICENSE\ndockerfiles\n",
            ),
            ("kept.txt", "k"),
            ("ignored.txt", "i"),
            ("vendor/lib-a/LICENSE", "MIT"),
            ("vendor/lib-a/code.go", "x"),
            ("run.sh", "#!/bin/sh\n*"),
            ("link", "-> kept.txt"),
        ],
    );
    let base = std::env::var("SLIPWAY_TEST_IMAGE_BUSYBOX")
        .unwrap_or_else(|_| "slipway-test/busybox:1.35".to_string());
    let dockerfile = format!("FROM {base}\nCOPY . /ctx\n");
    let inside = root.join("dockerfiles/app.Dockerfile");
    let outside = dir.path().join("app.Dockerfile");
    tree(&root, &[("dockerfiles/app.Dockerfile", &dockerfile)]);
    fs::write(&outside, &dockerfile).unwrap();

    // On every daemon of the matrix (20.10, 26.1 classic, 26.1 with the containerd image
    // store, where the old tar-in-the-body path cannot build at all).
    for (label, host) in common::daemon_matrix() {
        let endpoint = slipway::docker::Endpoint {
            host: host.clone(),
            source: "test".into(),
        };
        for df in [inside.clone(), outside.clone()] {
            let tag = format!("{}:bk", common::unique("slipway-test/ctx"));
            let _cleanup = Images(vec![tag.clone()], host.clone());
            let mut s = spec(&root);
            s.dockerfile = df.clone();
            let (context_dir, dockerfile_dir, name) = context::locals(&s).unwrap();
            assert_eq!(name, "app.Dockerfile");
            let mut providers = Providers::default();
            providers
                .locals
                .insert("context".into(), Arc::new(context_dir));
            providers
                .locals
                .insert("dockerfile".into(), Arc::new(dockerfile_dir));
            let id = common::unique("slipway-ctx-session");
            let sess = Session::open(&endpoint, &id, "ctx", &id, providers)
                .await
                .unwrap_or_else(|e| panic!("{label}: session: {e:#}"));
            let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
                .dockerfile(&name)
                .t(&tag)
                .version(bollard::query_parameters::BuilderVersion::BuilderBuildKit)
                .session(sess.id())
                .remote("client-session")
                .build();
            let mut stream = session::build(&endpoint, &options);
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    panic!("{label}: BuildKit build with {}: {e}", df.display());
                }
            }
            drop(sess);

            // The tar's entries, as paths under /ctx...
            let mut bytes = Vec::new();
            context::pack(&s, &mut bytes).unwrap();
            let mut from_tar: Vec<String> = read_tar(&bytes)
                .into_iter()
                .map(|(n, _)| format!("/ctx/{}", n.trim_end_matches('/')))
                .collect();
            from_tar.push("/ctx".into());
            from_tar.sort();
            // ...are exactly the paths in the image: a Dockerfile outside the context (or
            // ignored) never lands in it.
            let mut in_image: Vec<String> = listing_on(&host, &tag)
                .into_iter()
                .filter(|l| l.starts_with("/ctx"))
                .map(|l| l.split('|').next().unwrap().to_string())
                .collect();
            in_image.sort();
            assert_eq!(in_image, from_tar, "{label}, {}", df.display());
            assert!(in_image.contains(&"/ctx/vendor/lib-a/LICENSE".to_string()));
            assert!(!in_image.contains(&"/ctx/vendor/lib-a/code.go".to_string()));
            assert!(!in_image.contains(&"/ctx/.dockerignore".to_string()));
            assert!(!in_image.contains(&"/ctx/ignored.txt".to_string()));
            assert!(
                !in_image.iter().any(|p| p.contains("Dockerfile")),
                "{label}: {in_image:?}"
            );
        }
    }
}

/// Unreadable files and directories that are sent are errors naming them; unreadable ones that
/// are excluded are not (pruned ones are never opened; walked ones are skipped, as BuildKit
/// does). Root reads everything, so as root the test re-runs itself as `nobody`.
#[test]
fn unreadable_files_are_errors_that_name_them() {
    const CHILD: &str = "SLIPWAY_TEST_UNPRIVILEGED_CHILD";
    if unsafe { libc::geteuid() } == 0 && std::env::var_os(CHILD).is_none() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "unreadable_files_are_errors_that_name_them",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("TMPDIR", "/tmp");
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("re-running the test as nobody");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "as nobody:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tree(
        root,
        &[
            ("Dockerfile", "FROM scratch\n"),
            (
                ".dockerignore",
                "cache\nlocked-walked\n!locked-walked/**/keep\n",
            ),
            ("secret.bin", "no"),
            ("cache/x", "x"),
            ("locked-walked/x", "x"),
            ("ok.txt", "fine"),
        ],
    );
    let mode = |p: &str, m: u32| fs::set_permissions(root.join(p), fs::Permissions::from_mode(m));
    mode("cache", 0o000).unwrap();
    mode("locked-walked", 0o000).unwrap();
    // Excluded and unreadable: fine either way.
    let packed = context::digest(&spec(root)).unwrap();
    assert!(packed.files >= 3, "{packed:?}");

    mode("secret.bin", 0o000).unwrap();
    let err = format!("{:#}", context::digest(&spec(root)).unwrap_err());
    assert!(err.contains("secret.bin"), "{err}");
    mode("secret.bin", 0o644).unwrap();

    tree(root, &[("locked/inner", "x")]);
    mode("locked", 0o000).unwrap();
    let err = format!("{:#}", context::digest(&spec(root)).unwrap_err());
    assert!(
        err.contains("locked") && err.contains("Permission denied"),
        "{err}"
    );
    for p in ["locked", "cache", "locked-walked"] {
        mode(p, 0o755).unwrap();
    }
}

/// slipway's own files inside a context (state, config, generated files, manifests with
/// secret values) are left out after every ignore rule: a user's `!` cannot bring them back by
/// accident, and they change no digest.
#[test]
fn slipways_own_files_never_enter_the_context() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            ("app.py", "print(1)"),
            (".dockerignore", "*.md\n!k8s\n"),
            ("README.md", "x"),
            ("slipway.toml", "[app]\nname = \"a\"\n"),
            (".slipway/last-build.json", "{}"),
            ("k8s/web.secret.yaml", "data: c2VjcmV0"),
            ("charts/a/values.yaml", "x: 1"),
        ],
    );
    let mut s = spec(dir.path());
    let (before, _, _) = pack_entries(&s);
    s.leave_out = [".slipway", "slipway.toml", "k8s", "charts", "no-such-dir"]
        .iter()
        .map(|p| dir.path().join(p))
        .collect();
    let (packed, _, entries) = pack_entries(&s);
    assert_eq!(names(&entries), [".dockerignore", "Dockerfile", "app.py"]);
    // What slipway writes on every run changes nothing the digest covers.
    fs::write(dir.path().join(".slipway/last-build.json"), "{\"run\": 2}").unwrap();
    fs::write(dir.path().join("k8s/web.secret.yaml"), "data: b3RoZXI=").unwrap();
    assert_eq!(context::digest(&s).unwrap().sha256, packed.sha256);
    assert_ne!(before.sha256, packed.sha256);
}

/// A generated ignore file (slipway's header) that is stale still cannot let through what the
/// context's own `.dockerignore` excludes now: its rules apply after it.
#[test]
fn the_contexts_own_dockerignore_applies_after_a_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    tree(
        dir.path(),
        &[
            ("app.py", "print(1)"),
            ("secret.txt", "s3cr3t"),
            ("notes.log", "x"),
            (".dockerignore", "secret.txt\n"),
            (
                "df/app.Dockerfile.dockerignore",
                "# Generated by slipway for component `app` (python): regenerate with `slipway dockerfiles`.\n**/*.log\n",
            ),
            ("df/app.Dockerfile", "FROM scratch\n"),
        ],
    );
    let mut s = spec(dir.path());
    s.dockerfile = dir.path().join("df/app.Dockerfile");
    let (_, _, entries) = pack_entries(&s);
    assert_eq!(
        names(&entries),
        [
            ".dockerignore",
            "app.py",
            "df/",
            "df/app.Dockerfile",
            "df/app.Dockerfile.dockerignore"
        ]
    );
}

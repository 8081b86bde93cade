//! A component's plan → the text of its Dockerfile and of its ignore file. Pure: the same
//! plan always gives the same bytes, which is what `slipway dockerfiles --check` compares.
//!
//! Every Dockerfile has the stages `base`, `deps`, `build`, `production`, in that order:
//! `base` is the runtime image the others start from, `deps` installs dependencies from
//! manifests and lockfiles only (so a source edit reuses it), `build` adds the sources and
//! compiles, and `production` holds only what runs, as a fixed non-root UID.
//!
//! Base images come from `ARG`s declared before the first `FROM` (`PYTHON_IMAGE`,
//! `NODE_IMAGE`, `GO_IMAGE`, `RUST_IMAGE`, `RUNTIME_IMAGE`, set from `[base_images]`). Their
//! defaults are pinned official tags, repeated in the `FROM` as `${ARG:-default}` so that an
//! empty build arg falls back to them and scanners see a pinned tag. There is no `# syntax=`
//! line: a daemon without registry access cannot fetch a frontend image, and the built-in
//! frontend of BuildKit already knows `RUN --mount`.
//!
//! Reproducibility: no bytecode is written (`PYTHONDONTWRITEBYTECODE=1`, `--no-compile`),
//! package caches live in cache mounts rather than layers, installs are lockfile-exact, labels
//! are static (from `slipway.toml`, never a date or commit), Go builds drop paths and build
//! IDs. Next.js apps need `generateBuildId` in their own config for a fixed build ID.
//!
//! Secrets: configured runtime secrets never appear here. `build_secrets` are mounted with
//! `RUN --mount=type=secret` into the install and build steps and exported only to that
//! step's environment (e.g. a private registry token), never into an `ARG` or `ENV`.

use crate::config::{Component, Config};
use crate::detect::go::GoPlan;
use crate::detect::nextjs::NextPlan;
use crate::detect::node::{NodeDeps, NodePlan, PackageManager, Start};
use crate::detect::python::{self, Installer, PythonPlan, Server};
use crate::detect::rust::RustPlan;
use crate::detect::{Stack, StackPlan};

/// Default base images are pinned official tags, chosen per project from the toolchain it
/// declares ([`crate::detect::toolchain`]).
/// The runtime of compiled stacks. Debian slim rather than distroless: its `bash` runs the
/// HEALTHCHECK over `/dev/tcp` without any extra package, and `useradd` creates the user.
pub const RUNTIME_IMAGE: &str = "debian:12.8-slim";

/// How every generated file starts; only files that start so are ever rewritten or checked.
pub use crate::instructions::{ignore_path, is_generated, looks_like_dockerfile, HEADER_PREFIX};

/// The group and user name of the fixed UID.
const USER_NAME: &str = "app";

/// The first line of a generated file.
pub fn header(component: &str, stack: Stack) -> String {
    format!(
        "{HEADER_PREFIX} from slipway.toml (component \"{component}\", stack {stack}). Do not edit: run `slipway dockerfiles` to regenerate."
    )
}

/// What a component's configuration contributes to its Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub app: String,
    pub version: String,
    pub component: String,
    pub port: u16,
    pub health: String,
    pub user: u32,
    /// Names of the (non-secret) build args, declared in the build stage.
    pub build_args: Vec<String>,
    /// Names of build-time secrets, mounted into install and build steps.
    pub build_secrets: Vec<String>,
    /// The context's own `.dockerignore` (where it is, as shown to the user; its text), when
    /// it has one: the generated ignore file carries it, so the user's rules always apply.
    pub context_ignore: Option<(String, String)>,
}

impl Target {
    pub fn new(config: &Config, component: &Component) -> Self {
        Target {
            app: config.app.name.clone(),
            version: config.app.version.clone(),
            component: component.name.clone(),
            port: component.port,
            health: component.health.clone(),
            user: component.user,
            build_args: component.build_args.keys().cloned().collect(),
            build_secrets: component.build_secrets.clone(),
            context_ignore: None,
        }
    }
}

/// A generated Dockerfile and its ignore file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub dockerfile: String,
    pub ignore: String,
}

/// Renders both files.
pub fn render(target: &Target, plan: &StackPlan) -> Generated {
    Generated {
        dockerfile: dockerfile(target, plan),
        ignore: ignore(target, plan),
    }
}

/// Lines of a Dockerfile being written.
struct Doc {
    lines: Vec<String>,
}

impl Doc {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }

    fn blank(&mut self) {
        self.lines.push(String::new());
    }

    /// A `RUN` with mounts and shell commands joined by `&&`, one per line.
    fn run(&mut self, mounts: &[String], commands: &[String]) {
        let mut first = String::from("RUN");
        for m in mounts {
            first.push_str(&format!(" --mount={m}"));
        }
        if commands.len() == 1 && mounts.is_empty() {
            self.line(format!("{first} {}", commands[0]));
            return;
        }
        self.line(format!("{first} \\"));
        for (i, c) in commands.iter().enumerate() {
            let end = if i + 1 < commands.len() { " \\" } else { "" };
            let lead = if i == 0 { "    " } else { " && " };
            self.line(format!("{lead}{c}{end}"));
        }
    }

    /// `COPY` of files that keep their relative paths: root files in one instruction.
    fn copy_files(&mut self, files: &[String]) {
        let root: Vec<&str> = files
            .iter()
            .filter(|f| !f.contains('/'))
            .map(String::as_str)
            .collect();
        if !root.is_empty() {
            self.line(format!("COPY {} ./", root.join(" ")));
        }
        for f in files.iter().filter(|f| f.contains('/')) {
            self.line(format!("COPY {f} ./{f}"));
        }
    }

    fn text(self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn exec_form(argv: &[String]) -> String {
    let parts: Vec<String> = argv.iter().map(|a| json(a)).collect();
    format!("[{}]", parts.join(", "))
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Secret mounts for install and build steps.
fn secret_mounts(t: &Target) -> Vec<String> {
    t.build_secrets
        .iter()
        .map(|s| format!("type=secret,id={s}"))
        .collect()
}

/// Shell that exports each mounted secret to the step's environment, when it was given.
fn secret_exports(t: &Target) -> Vec<String> {
    t.build_secrets.iter().map(|s| secret_export(s)).collect()
}

fn secret_export(s: &str) -> String {
    format!("if [ -f /run/secrets/{s} ]; then {s}=\"$(cat /run/secrets/{s})\"; export {s}; fi")
}

/// Next.js's key for server actions: `next build` makes one at random unless this variable
/// holds one, and the action IDs in the bundle depend on it. Generated Next.js Dockerfiles
/// mount it as an optional build secret (slipway passes it when it is set), so that the same
/// key gives the same bundle; it never reaches a layer's history or the build log.
pub const NEXT_ACTIONS_KEY: &str = "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY";

/// `next build` also makes the preview-mode (draft mode) keys at random, with no way to give
/// them. Given a server-actions key, this derives them from it (HMAC-SHA256 of their names)
/// and puts them where the build wrote them, so that the output follows the key alone.
const NEXT_PREVIEW_KEYS_JS: &str = concat!(
    r#"const fs=require("fs"),c=require("crypto"),k=process.env.NEXT_SERVER_ACTIONS_ENCRYPTION_KEY;"#,
    r#"const h=(n,l)=>c.createHmac("sha256",k).update(n).digest("hex").slice(0,l);"#,
    r#"const m=[".next/server/preview-props.json",".next/prerender-manifest.json"],f=m.concat(m.map(p=>".next/standalone/"+p)).filter(p=>fs.existsSync(p));"#,
    r#"const o=fs.existsSync(m[0])?JSON.parse(fs.readFileSync(m[0])):JSON.parse(fs.readFileSync(m[1])).preview;"#,
    r#"const n={previewModeId:h("previewModeId",32),previewModeSigningKey:h("previewModeSigningKey",64),previewModeEncryptionKey:h("previewModeEncryptionKey",64)};"#,
    r#"for(const p of f){let s=fs.readFileSync(p,"utf8");for(const x in n)s=s.split(o[x]).join(n[x]);fs.writeFileSync(p,s)}"#
);

/// A cache mount that belongs to one component and is used by one build at a time: build
/// caches (Next.js's `.next/cache`, Cargo's `target/`) are not safe to share between projects
/// or concurrent writers, unlike content-addressed download caches (npm, pip, uv, Go modules),
/// which keep BuildKit's default of one shared cache per target path.
fn private_cache(t: &Target, what: &str, target: &str) -> String {
    format!(
        "type=cache,id=slipway-{}-{}-{what},target={target},sharing=locked",
        t.app, t.component
    )
}

fn base_arg(doc: &mut Doc, arg: &str, default: &str) {
    doc.line(format!("ARG {arg}={default}"));
}

fn from(doc: &mut Doc, arg: &str, default: &str, stage: &str) {
    doc.line(format!("FROM ${{{arg}:-{default}}} AS {stage}"));
}

/// `COPY . .`: the context is exactly the filtered set (the Dockerfile travels apart over the
/// BuildKit session; the classic builder drops it as the docker CLI arranges).
fn copy_context(doc: &mut Doc, _t: &Target) {
    doc.line("COPY . .");
}

/// Creates the fixed non-root user (shadow's tools are in every Debian image, minbase too).
/// Not `--system`: system accounts stop at SYS_UID_MAX (999), and useradd warns about 10001.
/// useradd dates the account in /etc/shadow by SOURCE_DATE_EPOCH when it is set (slipway
/// passes it as a build arg), else by today, which would make the image differ day by day.
fn create_user(doc: &mut Doc, t: &Target) {
    let uid = t.user;
    doc.line("ARG SOURCE_DATE_EPOCH");
    doc.line(format!(
        "RUN groupadd --gid {uid} {USER_NAME} \\\n && useradd --uid {uid} --gid {uid} --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {USER_NAME}"
    ));
}

fn labels(doc: &mut Doc, t: &Target, stack: Stack) {
    doc.line(format!(
        "LABEL org.opencontainers.image.title={} \\",
        json(&format!("{}-{}", t.app, t.component))
    ));
    doc.line(format!(
        "      org.opencontainers.image.version={} \\",
        json(&t.version)
    ));
    doc.line(format!(
        "      org.opencontainers.image.description={}",
        json(&format!(
            "Component {} of {} ({stack}), built from a Dockerfile generated by slipway",
            t.component, t.app
        ))
    ));
}

/// PID 1 of every image: a few lines of bash (in every Debian-based image, which all bases
/// are) that start the command, pass SIGTERM and SIGINT on to it, reap orphans and exit with
/// its status. As PID 1 itself, an app with no SIGTERM handler (a plain `node server.js`, a
/// Rust binary) would ignore `docker stop` and Kubernetes' TERM and be killed after the grace
/// period; as this init's child it stops at once, and an app that handles TERM still shuts
/// down gracefully. An ENTRYPOINT, so it stays when Kubernetes `args` replace the command.
pub const INIT: &str = concat!(
    "\"$@\" & pid=$!; ",
    "trap 'kill -TERM $pid 2>/dev/null' TERM; trap 'kill -INT $pid 2>/dev/null' INT; ",
    "wait $pid; status=$?; ",
    "while kill -0 $pid 2>/dev/null; do wait $pid; status=$?; done; ",
    "exit $status"
);

/// The end of every production stage: user, port, health check, labels, init, command.
fn finish(doc: &mut Doc, t: &Target, stack: Stack, health: Vec<String>, cmd: Vec<String>) {
    doc.line(format!("USER {0}:{0}", t.user));
    doc.line(format!("EXPOSE {}", t.port));
    doc.line(format!(
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \\\n  CMD {}",
        exec_form(&health)
    ));
    labels(doc, t, stack);
    doc.line(format!(
        "ENTRYPOINT {}",
        exec_form(&argv(&["/bin/bash", "-c", INIT, "slipway-init"]))
    ));
    doc.line(format!("CMD {}", exec_form(&cmd)));
}

/// The health path with anything that could end a quoted string percent-encoded.
fn health_path(t: &Target) -> String {
    let mut out = String::new();
    for c in t.health.chars() {
        if c.is_ascii_alphanumeric() || "/-._~!$&()*+,;=:@?".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn health_url(t: &Target) -> String {
    format!("http://127.0.0.1:{}{}", t.port, health_path(t))
}

/// A HEALTHCHECK in Python's standard library: urlopen raises (exit 1) on errors and 4xx/5xx.
fn python_health(t: &Target) -> Vec<String> {
    vec![
        "python3".into(),
        "-c".into(),
        format!(
            "import urllib.request; urllib.request.urlopen('{}', timeout=4)",
            health_url(t)
        ),
    ]
}

/// A HEALTHCHECK with Node's built-in fetch.
fn node_health(t: &Target) -> Vec<String> {
    vec![
        "node".into(),
        "-e".into(),
        format!(
            "fetch('{}').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))",
            health_url(t)
        ),
    ]
}

/// A HEALTHCHECK with bash's `/dev/tcp` (no curl or wget in slim images): a 2xx status line.
fn bash_health(t: &Target) -> Vec<String> {
    vec![
        "bash".into(),
        "-c".into(),
        format!(
            "exec 3<>/dev/tcp/127.0.0.1/{} && printf 'GET %s HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' '{}' >&3 && read -r _ code _ <&3 && [[ $code == 2* ]]",
            t.port,
            health_path(t)
        ),
    ]
}

fn build_args(doc: &mut Doc, t: &Target) {
    for a in &t.build_args {
        doc.line(format!("ARG {a}"));
    }
}

/// The Dockerfile of a component.
pub fn dockerfile(t: &Target, plan: &StackPlan) -> String {
    let mut doc = Doc {
        lines: vec![header(&t.component, plan.stack())],
    };
    match plan {
        StackPlan::Python(p) => python_file(&mut doc, t, p),
        StackPlan::Nextjs(p) => next_file(&mut doc, t, p),
        StackPlan::Node(p) => node_file(&mut doc, t, p),
        StackPlan::Go(p) => go_file(&mut doc, t, p),
        StackPlan::Rust(p) => rust_file(&mut doc, t, p),
    }
    doc.text()
}

fn python_file(doc: &mut Doc, t: &Target, p: &PythonPlan) {
    let (what, cmd) = match &p.server {
        Server::Uvicorn { app, app_dir } => {
            let mut cmd = argv(&["uvicorn", app]);
            if let Some(d) = app_dir {
                cmd.extend(argv(&["--app-dir", d]));
            }
            cmd.extend(argv(&["--host", "0.0.0.0", "--port", &t.port.to_string()]));
            (format!("ASGI app `{app}` served by uvicorn"), cmd)
        }
        Server::Gunicorn { app, chdir } => {
            let mut cmd = argv(&["gunicorn"]);
            if let Some(d) = chdir {
                cmd.extend(argv(&["--chdir", d]));
            }
            cmd.extend(argv(&[
                "--bind",
                &format!("0.0.0.0:{}", t.port),
                "--worker-tmp-dir",
                "/dev/shm",
                "--access-logfile",
                "-",
                app,
            ]));
            (format!("WSGI app `{app}` served by gunicorn"), cmd)
        }
    };
    let source = match &p.installer {
        Installer::Requirements { file, .. } => file.as_str(),
        Installer::Uv { .. } => "uv.lock",
        Installer::Poetry { .. } => "poetry.lock",
    };
    doc.line(format!("# Python {what}; dependencies from {source}."));
    doc.blank();
    base_arg(doc, "PYTHON_IMAGE", &p.image);
    doc.blank();
    doc.line("# base: the Python runtime every stage starts from.");
    from(doc, "PYTHON_IMAGE", &p.image, "base");
    doc.line("ENV PYTHONUNBUFFERED=1 \\");
    doc.line("    PYTHONDONTWRITEBYTECODE=1 \\");
    doc.line("    PIP_DISABLE_PIP_VERSION_CHECK=1 \\");
    doc.line("    PIP_NO_INPUT=1");
    doc.line("WORKDIR /app");
    doc.blank();
    doc.line("# deps: a virtualenv with the locked dependencies (no pip, no bytecode in it).");
    doc.line("FROM base AS deps");
    let pip = format!("python3 -m pip --python {VENV}/bin/python install --no-compile");
    let cache = "type=cache,target=/root/.cache/pip".to_string();
    let mut mounts = vec![cache.clone()];
    mounts.extend(secret_mounts(t));
    let mut cmds = secret_exports(t);
    match &p.installer {
        Installer::Requirements {
            file,
            files,
            hashes,
            pinned,
        } => {
            doc.line(format!("RUN python3 -m venv --without-pip {VENV}"));
            doc.copy_files(files);
            let flags = if *hashes {
                " --no-deps --require-hashes"
            } else if *pinned {
                " --no-deps"
            } else {
                ""
            };
            cmds.push(format!("{pip}{flags} -r {file}"));
            if *hashes || *pinned {
                cmds.push(format!("python3 -m pip --python {VENV}/bin/python check"));
            }
            cmds.push(venv_layer());
            doc.run(&mounts, &cmds);
        }
        Installer::Uv { files } => {
            doc.line(format!("ENV UV_PROJECT_ENVIRONMENT={VENV} \\"));
            doc.line("    UV_PYTHON_DOWNLOADS=never \\");
            doc.line("    UV_LINK_MODE=copy \\");
            doc.line("    UV_COMPILE_BYTECODE=0");
            doc.run(
                std::slice::from_ref(&cache),
                &[format!(
                    "python3 -m pip install --no-compile --target /opt/uv uv=={}",
                    python::UV_VERSION
                )],
            );
            doc.copy_files(files);
            mounts.push("type=cache,target=/root/.cache/uv".to_string());
            cmds.push(
                "/opt/uv/bin/uv sync --frozen --no-dev --no-install-project --python python3"
                    .to_string(),
            );
            doc.run(&mounts, &cmds);
        }
        Installer::Poetry { files } => {
            doc.line(format!("RUN python3 -m venv --without-pip {VENV}"));
            doc.run(
                std::slice::from_ref(&cache),
                &[format!(
                    "python3 -m pip install --no-compile --target /opt/poetry poetry=={} poetry-plugin-export=={}",
                    python::POETRY_VERSION,
                    python::POETRY_EXPORT_VERSION
                )],
            );
            doc.copy_files(files);
            cmds.push("PYTHONPATH=/opt/poetry /opt/poetry/bin/poetry export --only main --format requirements.txt --output /tmp/requirements.txt".to_string());
            cmds.push(format!(
                "{pip} --no-deps --require-hashes -r /tmp/requirements.txt"
            ));
            cmds.push(format!("python3 -m pip --python {VENV}/bin/python check"));
            cmds.push(venv_layer());
            doc.run(&mounts, &cmds);
        }
    }
    doc.blank();
    doc.line("# build: the app's source on top of its dependencies.");
    doc.line("FROM deps AS build");
    build_args(doc, t);
    copy_context(doc, t);
    if matches!(p.installer, Installer::Uv { .. }) {
        // Installs the project itself when it is a package (a no-op for a virtual project).
        let mut mounts = vec!["type=cache,target=/root/.cache/uv".to_string()];
        mounts.extend(secret_mounts(t));
        let mut cmds = secret_exports(t);
        cmds.push(
            "/opt/uv/bin/uv sync --frozen --no-dev --no-editable --python python3".to_string(),
        );
        cmds.push(venv_layer());
        doc.run(&mounts, &cmds);
    }
    doc.blank();
    doc.line("# production: the virtualenv and the source, run as a fixed non-root UID.");
    doc.line("FROM base AS production");
    let uv = matches!(p.installer, Installer::Uv { .. });
    doc.line(format!(
        "# The virtualenv first, from {VENV_LAYER} onto /: the same layer, byte for byte, from one"
    ));
    doc.line(
        "# build to the next while the dependencies stay, with the build cache or without (the user's",
    );
    doc.line("# layer, which a build without cache makes anew, comes after it).");
    doc.line(format!(
        "COPY --from={} {VENV_LAYER}/ /",
        if uv { "build" } else { "deps" }
    ));
    create_user(doc, t);
    if uv {
        doc.line("COPY --from=build /app /app");
    } else {
        doc.line(
            "# The source from the context, not from the build stage: a change to it makes BuildKit",
        );
        doc.line("# checksum no virtualenv.");
        doc.line("COPY . /app");
    }
    if matches!(p.server, Server::Gunicorn { .. }) {
        // gunicorn 25+ opens a control socket in $XDG_RUNTIME_DIR, else under the home
        // directory, which the app user has none of (a warning at every start).
        doc.line("# gunicorn's control socket goes to XDG_RUNTIME_DIR (the user has no home).");
        doc.line(format!(
            "ENV PATH=\"{VENV}/bin:$PATH\" \\\n    PORT={} \\\n    XDG_RUNTIME_DIR=/tmp",
            t.port
        ));
    } else {
        doc.line(format!(
            "ENV PATH=\"{VENV}/bin:$PATH\" \\\n    PORT={}",
            t.port
        ));
    }
    finish(doc, t, Stack::Python, python_health(t), cmd);
}

/// The `deps` stage of Node stacks: the package manager, manifests, a frozen install.
fn node_deps(doc: &mut Doc, t: &Target, deps: &NodeDeps) {
    doc.line("FROM base AS deps");
    let npm_cache = "type=cache,target=/root/.npm".to_string();
    let cache = pm_cache(&deps.package_manager);
    let (tool, install) = match &deps.package_manager {
        PackageManager::Npm => (None, "npm ci --no-audit --no-fund".to_string()),
        PackageManager::Pnpm { version } => (
            Some(format!("pnpm@{version}")),
            "pnpm install --frozen-lockfile".to_string(),
        ),
        PackageManager::Yarn { version } => (
            Some(format!("yarn@{version}")),
            "yarn install --frozen-lockfile --non-interactive".to_string(),
        ),
        PackageManager::YarnBerry { version } => (
            Some(format!("@yarnpkg/cli-dist@{version}")),
            "yarn install --immutable".to_string(),
        ),
    };
    if let Some(tool) = tool {
        // A private prefix: official images ship their own yarn in /usr/local/bin.
        doc.line("ENV PATH=\"/opt/pm/bin:$PATH\"");
        doc.run(
            std::slice::from_ref(&npm_cache),
            &[format!(
                "npm install --global --prefix /opt/pm --no-audit --no-fund {tool}"
            )],
        );
    }
    doc.copy_files(&deps.manifests);
    let mut mounts = vec![cache];
    mounts.extend(secret_mounts(t));
    let mut cmds = secret_exports(t);
    cmds.push(install);
    doc.run(&mounts, &cmds);
}

/// The cache mount of a package manager's download cache.
fn pm_cache(pm: &PackageManager) -> String {
    match pm {
        PackageManager::Npm => "type=cache,target=/root/.npm",
        PackageManager::Pnpm { .. } => "type=cache,target=/root/.local/share/pnpm/store",
        PackageManager::Yarn { .. } => "type=cache,target=/usr/local/share/.cache/yarn",
        PackageManager::YarnBerry { .. } => "type=cache,target=/root/.yarn/berry/cache",
    }
    .to_string()
}

/// The command that runs a package.json script.
fn run_script(pm: &PackageManager, script: &str) -> String {
    match pm {
        PackageManager::Npm => format!("npm run {script}"),
        PackageManager::Pnpm { .. } => format!("pnpm run {script}"),
        PackageManager::Yarn { .. } | PackageManager::YarnBerry { .. } => {
            format!("yarn run {script}")
        }
    }
}

/// The command that removes dev dependencies from node_modules after a build.
fn prune(pm: &PackageManager) -> String {
    match pm {
        PackageManager::Npm => "npm prune --omit=dev --no-audit --no-fund".to_string(),
        PackageManager::Pnpm { .. } => "pnpm prune --prod".to_string(),
        PackageManager::Yarn { .. } => {
            "yarn install --production --frozen-lockfile --non-interactive --ignore-scripts --prefer-offline".to_string()
        }
        PackageManager::YarnBerry { .. } => "yarn workspaces focus --all --production".to_string(),
    }
}

fn node_base(doc: &mut Doc, image: &str, next: bool) {
    base_arg(doc, "NODE_IMAGE", image);
    doc.blank();
    doc.line("# base: the Node.js runtime every stage starts from.");
    from(doc, "NODE_IMAGE", image, "base");
    if next {
        doc.line("ENV NEXT_TELEMETRY_DISABLED=1");
    }
    doc.line("WORKDIR /app");
    doc.blank();
    doc.line("# deps: node_modules from the lockfile alone.");
}

/// What `next start` never loads, removed from what ships, as Next's own standalone output
/// leaves it out: package managers install every libc's build of the SWC compiler and of
/// sharp's libvips (some 130 MB each; the images are glibc, Debian), and packages carry
/// source maps, type declarations and Next's development server bundles (some 90 MB). The
/// compiler stays for a TypeScript `next.config`, which `next start` transpiles.
fn next_unused_files(config_file: Option<&str>) -> Vec<String> {
    let ts_config = config_file.is_some_and(|c| c.ends_with(".ts") || c.ends_with(".mts"));
    let swc = if ts_config {
        "node_modules/@next/swc-*-musl"
    } else {
        "node_modules/@next/swc-*"
    };
    vec![
        format!("rm -rf {swc} node_modules/@img/sharp-*linuxmusl* node_modules/next/dist/compiled/next-server/*.dev.js"),
        "find node_modules -type f \\( -name '*.map' -o -name '*.d.ts' \\) -delete".to_string(),
    ]
}

/// Where a Python image's virtualenv lives: a directory of its own under `/`, which no base
/// image has, so that the COPY of [`VENV_LAYER`] makes it from the tree's own `venv/` entry.
const VENV: &str = "/venv";
/// The tree a Python stage copies the virtualenv to for the production stage (`venv/`, hard
/// links to [`VENV`]), every entry at [`FIXED_TIME`]: COPY'd onto `/`, its layer is the same
/// bytes from one build to the next while the dependencies stay, cache or not (as the traced
/// `node_modules` below). A COPY of the virtualenv itself would make [`VENV`] at the build's
/// time, and one under `/opt` would change `/opt`.
const VENV_LAYER: &str = "/venv-layer";

/// The command that makes [`VENV_LAYER`] once the virtualenv is complete.
fn venv_layer() -> String {
    format!(
        "mkdir {VENV_LAYER} && cp -al {VENV} {VENV_LAYER}/ && find {VENV_LAYER} -exec touch -h -d {FIXED_TIME} {{}} +"
    )
}

/// Where the build stage moves the standalone output's traced `node_modules`: a tree to copy
/// onto `/` (`app/node_modules`), whose every entry has the same fixed time
/// ([`FIXED_TIME`]).
const TRACED: &str = ".next/traced";
/// The time the traced `node_modules` and a Python virtualenv's tree ([`VENV_LAYER`]) get
/// (`touch -d`). For the traced `node_modules`: with it, and with `/app` made by
/// their COPY (from the tree's own `app/`) before anything else is in it, their layer is the
/// same bytes from one build to the next, cache or not: the builder writes the build's time
/// on a directory a COPY creates or changes, but no directory of this layer is changed later.
const FIXED_TIME: &str = "@0";

fn next_file(doc: &mut Doc, t: &Target, p: &NextPlan) {
    let pm = &p.deps.package_manager;
    doc.line(format!(
        "# Next.js app ({}), {}.",
        pm.name(),
        if p.standalone {
            "standalone output"
        } else {
            "served by `next start`"
        }
    ));
    doc.blank();
    node_base(doc, &p.image, true);
    node_deps(doc, t, &p.deps);
    doc.blank();
    doc.line("# build: `next build`; build args are inlined into the bundle (NEXT_PUBLIC_*).");
    doc.line(format!(
        "# slipway passes {} (from the input digest): return it from `generateBuildId` in\n# next.config for the same build ID, and so the same image, from the same inputs.",
        crate::instructions::BUILD_ID_ARG
    ));
    doc.line("FROM deps AS build");
    doc.line("COPY . .");
    doc.line(format!("ARG {}", crate::instructions::BUILD_ID_ARG));
    build_args(doc, t);
    let mut mounts = vec![private_cache(t, "next", "/app/.next/cache")];
    if !p.standalone {
        mounts.push(pm_cache(pm));
    }
    mounts.extend(secret_mounts(t));
    let key_given = t.build_secrets.iter().any(|s| s == NEXT_ACTIONS_KEY);
    if !key_given {
        mounts.push(format!("type=secret,id={NEXT_ACTIONS_KEY},required=false"));
    }
    let mut cmds = secret_exports(t);
    if !key_given {
        cmds.push(secret_export(NEXT_ACTIONS_KEY));
    }
    cmds.push(if p.build_script {
        run_script(pm, "build")
    } else {
        "node_modules/.bin/next build".to_string()
    });
    cmds.push("mkdir -p public".to_string());
    cmds.push(format!(
        "if [ -n \"${{{NEXT_ACTIONS_KEY}:-}}\" ]; then node -e '{NEXT_PREVIEW_KEYS_JS}'; fi"
    ));
    if p.standalone {
        // The traced dependencies apart from the app's own server code: COPY's cache key is
        // the content, so after a change to the app they stay the layer they were.
        cmds.push(format!(
            "mkdir -p .next/standalone/node_modules {TRACED}/app && mv .next/standalone/node_modules {TRACED}/app/node_modules"
        ));
        cmds.push(format!(
            "find {TRACED} -exec touch -h -d {FIXED_TIME} {{}} +"
        ));
    } else {
        cmds.push(prune(pm));
        cmds.extend(next_unused_files(p.config_file.as_deref()));
    }
    doc.run(&mounts, &cmds);
    doc.blank();
    doc.line("# production: only what runs, as a fixed non-root UID.");
    let env = format!(
        "NODE_ENV=production \\\n    PORT={} \\\n    HOSTNAME=0.0.0.0",
        t.port
    );
    let cmd = if p.standalone {
        // Not from `base`: its WORKDIR made /app at the build's time, before the traced
        // node_modules (see FIXED_TIME).
        from(doc, "NODE_IMAGE", &p.image, "production");
        doc.line(format!("ENV NEXT_TELEMETRY_DISABLED=1 \\\n    {env}"));
        doc.line(
            "# The traced node_modules first, in a layer of their own: a change to the app's code",
        );
        doc.line("# leaves it as it was, and a build without cache makes it again byte for byte.");
        doc.line(format!("COPY --from=build /app/{TRACED}/ /"));
        create_user(doc, t);
        doc.line("WORKDIR /app");
        doc.line("COPY --from=build /app/public ./public");
        doc.line("COPY --from=build /app/.next/standalone ./");
        doc.line("COPY --from=build /app/.next/static ./.next/static");
        argv(&["node", "server.js"])
    } else {
        doc.line("FROM base AS production");
        doc.line(format!("ENV {env}"));
        create_user(doc, t);
        doc.line("COPY --from=build /app/package.json ./");
        if let Some(c) = &p.config_file {
            doc.line(format!("COPY --from=build /app/{c} ./"));
        }
        doc.line("COPY --from=build /app/node_modules ./node_modules");
        doc.line("COPY --from=build /app/public ./public");
        doc.line("COPY --from=build /app/.next ./.next");
        argv(&[
            "node_modules/.bin/next",
            "start",
            "--port",
            &t.port.to_string(),
        ])
    };
    finish(doc, t, Stack::Nextjs, node_health(t), cmd);
}

fn node_file(doc: &mut Doc, t: &Target, p: &NodePlan) {
    let pm = &p.deps.package_manager;
    doc.line(format!(
        "# Node.js app ({}{}).",
        pm.name(),
        if p.typescript { ", TypeScript" } else { "" }
    ));
    doc.blank();
    node_base(doc, &p.image, false);
    node_deps(doc, t, &p.deps);
    doc.blank();
    doc.line("# build: the sources, the `build` script, then dev dependencies removed.");
    doc.line("FROM deps AS build");
    if p.out_dir.is_none() {
        copy_context(doc, t);
    } else {
        doc.line("COPY . .");
    }
    build_args(doc, t);
    let mut mounts = vec![pm_cache(pm)];
    mounts.extend(secret_mounts(t));
    let mut cmds = secret_exports(t);
    if p.build_script {
        cmds.push(run_script(pm, "build"));
    }
    cmds.push(prune(pm));
    doc.run(&mounts, &cmds);
    doc.blank();
    doc.line("# production: production node_modules and the app, as a fixed non-root UID.");
    doc.line("FROM base AS production");
    doc.line(format!("ENV NODE_ENV=production \\\n    PORT={}", t.port));
    create_user(doc, t);
    match &p.out_dir {
        Some(dir) => {
            doc.line("COPY --from=build /app/package.json ./");
            doc.line("COPY --from=build /app/node_modules ./node_modules");
            doc.line(format!("COPY --from=build /app/{dir} ./{dir}"));
        }
        None => doc.line("COPY --from=build /app ./"),
    }
    let cmd = match &p.start {
        Start::Node(argv) => argv.clone(),
        Start::Script => argv(&["npm", "start"]),
    };
    finish(doc, t, Stack::Node, node_health(t), cmd);
}

fn compiled_base(doc: &mut Doc, arg: &str, default: &str, what: &str) {
    base_arg(doc, arg, default);
    base_arg(doc, "RUNTIME_IMAGE", RUNTIME_IMAGE);
    doc.blank();
    doc.line(format!(
        "# base: the {what} toolchain the deps and build stages use."
    ));
    from(doc, arg, default, "base");
}

/// The production stage of compiled stacks: the runtime image, CA roots, one binary.
fn binary_production(doc: &mut Doc, t: &Target, stack: Stack, binary: &str) {
    doc.blank();
    doc.line("# production: the binary alone on a slim runtime, as a fixed non-root UID.");
    from(doc, "RUNTIME_IMAGE", RUNTIME_IMAGE, "production");
    create_user(doc, t);
    doc.line(
        "COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
    );
    doc.line(format!(
        "COPY --from=build /out/{binary} /usr/local/bin/{binary}"
    ));
    doc.line(format!("ENV PORT={}", t.port));
    finish(
        doc,
        t,
        stack,
        bash_health(t),
        vec![format!("/usr/local/bin/{binary}")],
    );
}

fn go_file(doc: &mut Doc, t: &Target, p: &GoPlan) {
    doc.line(format!(
        "# Go app: package {} built as the static binary `{}`.",
        p.package, p.binary
    ));
    doc.blank();
    compiled_base(doc, "GO_IMAGE", &p.image, "Go");
    doc.line("ENV CGO_ENABLED=0 \\");
    doc.line("    GOTOOLCHAIN=local");
    doc.line("WORKDIR /src");
    doc.blank();
    doc.line("# deps: the module cache from go.mod and go.sum alone.");
    doc.line("FROM base AS deps");
    let mut manifests = vec!["go.mod".to_string()];
    if p.go_sum {
        manifests.push("go.sum".to_string());
    }
    doc.copy_files(&manifests);
    let mod_cache = "type=cache,target=/go/pkg/mod".to_string();
    let mut mounts = vec![mod_cache.clone()];
    mounts.extend(secret_mounts(t));
    let mut cmds = secret_exports(t);
    if p.vendor {
        doc.line("COPY vendor ./vendor");
        cmds.push("go mod verify".to_string());
    } else {
        cmds.push("go mod download".to_string());
    }
    doc.run(&mounts, &cmds);
    doc.blank();
    doc.line("# build: a static, trimmed binary without a build ID (reproducible).");
    doc.line("FROM deps AS build");
    build_args(doc, t);
    doc.line("COPY . .");
    let mut mounts = vec![
        mod_cache,
        "type=cache,target=/root/.cache/go-build".to_string(),
    ];
    mounts.extend(secret_mounts(t));
    let mut cmds = secret_exports(t);
    let vendor = if p.vendor { " -mod=vendor" } else { "" };
    cmds.push(format!(
        "go build{vendor} -trimpath -ldflags=\"-s -w -buildid=\" -o /out/{} {}",
        p.binary, p.package
    ));
    doc.run(&mounts, &cmds);
    binary_production(doc, t, Stack::Go, &p.binary);
}

fn rust_file(doc: &mut Doc, t: &Target, p: &RustPlan) {
    doc.line(format!("# Rust app: the release binary `{}`.", p.binary));
    doc.blank();
    compiled_base(doc, "RUST_IMAGE", &p.image, "Rust");
    doc.line("WORKDIR /src");
    doc.blank();
    doc.line("# deps: crates fetched from Cargo.toml and Cargo.lock alone (stub sources).");
    doc.line("FROM base AS deps");
    doc.copy_files(&["Cargo.toml".to_string(), "Cargo.lock".to_string()]);
    let registry = "type=cache,target=/usr/local/cargo/registry".to_string();
    let mut mounts = vec![registry.clone()];
    mounts.extend(secret_mounts(t));
    let mut cmds = secret_exports(t);
    let mut dirs: Vec<&str> = p
        .stubs
        .iter()
        .filter_map(|s| s.rsplit_once('/').map(|(d, _)| d))
        .collect();
    dirs.dedup();
    cmds.push(format!("mkdir -p {}", dirs.join(" ")));
    for s in &p.stubs {
        cmds.push(format!("echo 'fn main() {{}}' > {s}"));
    }
    cmds.push("cargo fetch --locked".to_string());
    doc.run(&mounts, &cmds);
    doc.blank();
    doc.line("# build: the release binary; the target directory lives in a cache mount.");
    doc.line("FROM deps AS build");
    build_args(doc, t);
    doc.line("COPY . .");
    let mut mounts = vec![registry, private_cache(t, "target", "/src/target")];
    mounts.extend(secret_mounts(t));
    let mut cmds = secret_exports(t);
    cmds.push(format!("cargo build --release --locked --bin {}", p.binary));
    cmds.push(format!("install -D target/release/{0} /out/{0}", p.binary));
    doc.run(&mounts, &cmds);
    binary_production(doc, t, Stack::Rust, &p.binary);
}

/// The ignore file: what never belongs in the build context of this stack.
pub fn ignore(t: &Target, plan: &StackPlan) -> String {
    let mut lines = vec![
        header(&t.component, plan.stack()),
        "# Version control, local settings and secrets never enter an image.".to_string(),
        ".git".to_string(),
        "**/.DS_Store".to_string(),
        "**/.env".to_string(),
        "**/.env.*".to_string(),
        "**/*.log".to_string(),
        ".slipway".to_string(),
    ];
    let stack_lines: &[&str] = match plan.stack() {
        Stack::Nextjs | Stack::Node => &[
            "# Installed and built inside the image.",
            "**/node_modules",
            ".next",
            "out",
            "coverage",
            ".turbo",
            ".vercel",
            "*.tsbuildinfo",
        ],
        Stack::Python => &[
            "# Installed inside the image; caches and tests are not part of it.",
            "**/__pycache__",
            "**/*.py[cod]",
            ".venv",
            "venv",
            ".pytest_cache",
            ".mypy_cache",
            ".ruff_cache",
            ".tox",
            ".coverage",
            "htmlcov",
            "*.egg-info",
            "tests",
            "**/*.db",
        ],
        Stack::Go => &["# Built inside the image.", "bin"],
        Stack::Rust => &["# Built inside the image.", "target"],
    };
    lines.extend(stack_lines.iter().map(|s| s.to_string()));
    if let StackPlan::Node(NodePlan {
        out_dir: Some(dir), ..
    }) = plan
    {
        lines.push(dir.clone());
    }
    if let Some((shown, text)) = &t.context_ignore {
        // Last, so that the user's rules win: what it excludes never reaches a build, what
        // it re-includes with `!` stays, even where slipway's own lines above exclude it.
        lines.push(String::new());
        lines.push(format!(
            "# The context's own .dockerignore ({shown}), verbatim: its rules come last and win."
        ));
        lines.push(text.trim_end_matches(['\n', '\r']).to_string());
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(health: &str) -> Target {
        Target {
            app: "a".into(),
            version: "1".into(),
            component: "web".into(),
            port: 8080,
            health: health.into(),
            user: 10001,
            build_args: vec![],
            build_secrets: vec!["TOKEN".into()],
            context_ignore: None,
        }
    }

    #[test]
    fn ignore_file_sits_next_to_the_dockerfile() {
        assert_eq!(
            ignore_path(std::path::Path::new("dockerfiles/web.Dockerfile")),
            std::path::Path::new("dockerfiles/web.Dockerfile.dockerignore")
        );
    }

    #[test]
    fn only_headed_files_are_slipways() {
        assert!(is_generated(&header("web", Stack::Go)));
        assert!(!is_generated("FROM scratch\n# Generated by slipway\n"));
    }

    #[test]
    fn health_paths_cannot_break_out_of_quotes() {
        let t = target("/h'e\"a l\\th");
        assert_eq!(health_path(&t), "/h%27e%22a%20l%5Cth");
        for argv in [python_health(&t), node_health(&t), bash_health(&t)] {
            assert!(!argv[2].contains("h'e"), "{}", argv[2]);
        }
    }

    #[test]
    fn secrets_are_mounted_and_exported_to_the_step_only() {
        assert_eq!(secret_mounts(&target("/")), ["type=secret,id=TOKEN"]);
        assert_eq!(
            secret_exports(&target("/")),
            ["if [ -f /run/secrets/TOKEN ]; then TOKEN=\"$(cat /run/secrets/TOKEN)\"; export TOKEN; fi"]
        );
    }
}

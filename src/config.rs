//! `slipway.toml` -> validated settings.
//!
//! The file is read in two passes. Serde reads it into `Raw*` types that keep the byte span of
//! every value a later rule may reject (`toml::Spanned`), with unknown keys refused; then
//! [`validate`] checks what serde cannot (names, ranges, cross-references) and produces the
//! plain [`Config`] every later step reads. Every error is a [`ConfigError`] that names the
//! file, line and column, so a user can jump straight to the mistake.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Exit, Fail};

/// The file name searched for, upward from the current directory.
pub const FILE_NAME: &str = "slipway.toml";

/// Keys accepted in `[base_images]`: the base image each stack's Dockerfile takes from an `ARG`.
pub const BASE_IMAGE_KEYS: &[&str] = &["python", "node", "go", "rust", "runtime"];

/// The Dockerfile `ARG` that holds the base image for a `[base_images]` key.
pub fn base_image_arg(key: &str) -> String {
    format!("{}_IMAGE", key.to_ascii_uppercase())
}

/// A configuration error, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Config {
    /// The `slipway.toml` this came from.
    pub path: PathBuf,
    /// The directory holding it: every relative path in the file is relative to it.
    pub root: PathBuf,
    pub app: App,
    /// Components by name, in name order.
    pub components: BTreeMap<String, Component>,
    pub images: Images,
    /// Overrides of the base image each stack uses, by key (see [`BASE_IMAGE_KEYS`]).
    pub base_images: BTreeMap<String, String>,
    pub cluster: ClusterTarget,
    /// `[cluster] registry`: the local registry wired into the cluster (KEP-1755), `HOST:PORT`
    /// as the Docker daemon reaches it. `None`: detected from the cluster, if it has one.
    pub cluster_registry: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct App {
    /// A DNS-1123 label.
    pub name: String,
    pub version: String,
    /// The Kubernetes namespace the app is deployed to (default: the app name).
    pub namespace: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Images {
    /// Image name prefix: images are `PREFIX/COMPONENT:TAG` (default: the app name).
    pub prefix: String,
    /// Extra tags moved after each successful build (default: `latest`).
    pub tags: Vec<String>,
    /// Look each image up in its registry (the prefix's) before building it, as `--push`
    /// does: an image the registry has under its input-digest tag is not built.
    pub registry: bool,
    /// `cache_from` / `cache_to`: the build cache across machines ([`crate::cache`]), as the
    /// flags give it (the flags win, each direction on its own). Local directories are
    /// relative to the file's directory.
    pub cache: crate::cache::CacheOptions,
}

/// Which cluster images are loaded into.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum ClusterTarget {
    Auto,
    Kind(String),
    Minikube(String),
    /// A k3d cluster (k3s in Docker).
    K3d(String),
    None,
}

impl ClusterTarget {
    /// Parses `auto`, `none`, `kind:NAME`, `minikube:PROFILE`, `k3d:NAME` (also `kind`,
    /// `minikube`, `k3d` alone for the tools' default names).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, name) = match s.split_once(':') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        let checked = |n: Option<&str>, default: &str| -> Result<String, String> {
            let n = n.unwrap_or(default);
            if is_dns_label(n) {
                Ok(n.to_string())
            } else {
                Err(format!(
                    "cluster name `{n}` is not a valid name (lowercase letters, digits and `-`)"
                ))
            }
        };
        match (kind, name) {
            ("auto", None) => Ok(ClusterTarget::Auto),
            ("none", None) => Ok(ClusterTarget::None),
            ("kind", n) => Ok(ClusterTarget::Kind(checked(n, "kind")?)),
            ("minikube", n) => Ok(ClusterTarget::Minikube(checked(n, "minikube")?)),
            ("k3d", n) => Ok(ClusterTarget::K3d(checked(n, "k3s-default")?)),
            (bare, None) if is_dns_label(bare) => Err(format!(
                "unknown cluster `{s}`: expected `auto`, `none`, `kind:NAME`, `minikube:PROFILE` or `k3d:NAME` (did you mean `kind:{bare}`, `minikube:{bare}` or `k3d:{bare}`?)"
            )),
            _ => Err(format!(
                "unknown cluster `{s}`: expected `auto`, `none`, `kind:NAME`, `minikube:PROFILE` or `k3d:NAME`"
            )),
        }
    }
}

impl fmt::Display for ClusterTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterTarget::Auto => f.write_str("auto"),
            ClusterTarget::None => f.write_str("none"),
            ClusterTarget::Kind(n) => write!(f, "kind:{n}"),
            ClusterTarget::Minikube(n) => write!(f, "minikube:{n}"),
            ClusterTarget::K3d(n) => write!(f, "k3d:{n}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Component {
    pub name: String,
    /// The build context, relative to the config's directory.
    pub context: PathBuf,
    /// A stack named in the file, overriding detection.
    pub stack: Option<String>,
    /// The Dockerfile, relative to the config's directory.
    pub dockerfile: PathBuf,
    /// True when the file names the Dockerfile itself (it may be the user's own).
    pub dockerfile_explicit: bool,
    /// The port the container listens on.
    pub port: u16,
    /// HTTP path answering 200 while the process is up (liveness, startup and HEALTHCHECK).
    pub health: String,
    /// HTTP path answering 200 when ready for traffic (default: `health`).
    pub readiness: String,
    /// Non-secret build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Names of build-time secrets, served through BuildKit secret mounts from the
    /// environment; never build args.
    pub build_secrets: Vec<String>,
    /// The Dockerfile stage to build.
    pub target: String,
    /// Non-secret runtime environment; values may hold references (see [`Template`]).
    pub config: BTreeMap<String, Template>,
    /// Names of secret runtime variables; their values never live in the file.
    pub secrets: Vec<String>,
    pub service: Service,
    pub replicas: u32,
    pub resources: Resources,
    pub autoscaling: Autoscaling,
    /// The UID the container runs as (default: the generated Dockerfiles' 10001).
    pub user: u32,
    /// Paths the process writes at runtime (mounted as emptyDir under a read-only root).
    pub writable: Vec<String>,
    /// `[components.NAME.ingress]`: an Ingress to the component's Service (none without the
    /// table).
    pub ingress: Option<Ingress>,
    /// Where `context` and the Dockerfile are named in the file (for [`confine`]'s errors).
    #[serde(skip)]
    pub at: Places,
}

/// An Ingress (networking.k8s.io/v1) to a component's Service, from
/// `[components.NAME.ingress]`; the table turns it on unless `enabled = false`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ingress {
    pub enabled: bool,
    /// `ingressClassName`; empty leaves it to the cluster's default class.
    pub class_name: String,
    pub annotations: BTreeMap<String, String>,
    /// At least one; a host of `""` is a rule for any host.
    pub hosts: Vec<IngressHost>,
    pub tls: Vec<IngressTls>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IngressHost {
    pub host: String,
    /// `(path, pathType)`, at least one.
    pub paths: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IngressTls {
    pub secret_name: String,
    pub hosts: Vec<String>,
}

/// A `(line, column)` in the config file, for the checks that need the file system.
pub type Place = (usize, usize);

/// Where a component's paths are named: `context`, `dockerfile` (its table when implicit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Places {
    pub context: Place,
    pub dockerfile: Place,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Service {
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// The Service port (default: the container port).
    pub port: u16,
    /// A fixed node port (30000-32767) for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Quantities {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: Quantities,
    #[serde(default)]
    pub limits: Quantities,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Autoscaling {
    pub enabled: bool,
    pub min: u32,
    pub max: u32,
    /// Target average CPU utilisation, percent of requests.
    pub target_cpu: u32,
}

/// A config value that may refer to other components: `${NAME.url}` (the Service URL,
/// `http://SERVICE.NAMESPACE.svc:PORT`), `${NAME.host}` (`SERVICE.NAMESPACE.svc`),
/// `${NAME.port}` (the Service port). `$$` is a literal `$`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Template {
    pub raw: String,
    #[serde(skip)]
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ref { component: String, attr: RefAttr },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefAttr {
    Url,
    Host,
    Port,
}

impl Template {
    /// Parses a value; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = raw;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("$$") {
                text.push('$');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("${") {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("unclosed reference in `{raw}`: expected `}}`"))?;
                let inner = &r[..end];
                let (component, attr) = inner.split_once('.').ok_or_else(|| {
                    format!(
                        "reference `${{{inner}}}` must be `${{COMPONENT.url}}`, `.host` or `.port`"
                    )
                })?;
                let attr = match attr {
                    "url" => RefAttr::Url,
                    "host" => RefAttr::Host,
                    "port" => RefAttr::Port,
                    other => {
                        return Err(format!(
                            "unknown attribute `{other}` in `${{{inner}}}`: expected `url`, `host` or `port`"
                        ))
                    }
                };
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Ref {
                    component: component.to_string(),
                    attr,
                });
                rest = &r[end + 1..];
            } else {
                text.push('$');
                rest = &rest[1..];
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            raw: raw.to_string(),
            parts,
        })
    }

    /// The components this value refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref { component, .. } => Some(component.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The value with literal text passed through `text` and each reference replaced by
    /// `reference(component, attr)`, `attr` being `url`, `host` or `port`. The chart uses it to
    /// turn a value into a Helm template that resolves at install time.
    pub fn render_with(
        &self,
        text: impl Fn(&str) -> String,
        reference: impl Fn(&str, &str) -> String,
    ) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(t) => text(t),
                Part::Ref { component, attr } => reference(
                    component,
                    match attr {
                        RefAttr::Url => "url",
                        RefAttr::Host => "host",
                        RefAttr::Port => "port",
                    },
                ),
            })
            .collect()
    }

    /// The value with every reference resolved against `config`.
    pub fn resolve(&self, config: &Config) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Ref { component, attr } => {
                    let host = config.service_host(component);
                    let port = config
                        .components
                        .get(component)
                        .map_or(0, |c| c.service.port);
                    match attr {
                        RefAttr::Url => out.push_str(&format!("http://{host}:{port}")),
                        RefAttr::Host => out.push_str(&host),
                        RefAttr::Port => out.push_str(&port.to_string()),
                    }
                }
            }
        }
        out
    }
}

impl Config {
    /// The Kubernetes name of a component's objects (Deployment, Service, ...).
    pub fn object_name(&self, component: &str) -> String {
        format!("{}-{}", self.app.name, component)
    }

    /// The in-cluster DNS name of a component's Service.
    pub fn service_host(&self, component: &str) -> String {
        format!("{}.{}.svc", self.object_name(component), self.app.namespace)
    }

    /// The image repository of a component (`PREFIX/NAME`).
    pub fn image_repo(&self, component: &str) -> String {
        format!("{}/{}", self.images.prefix, component)
    }

    /// A component's context as a path on disk.
    pub fn context_dir(&self, component: &Component) -> PathBuf {
        self.root.join(&component.context)
    }

    /// A component's Dockerfile as a path on disk.
    pub fn dockerfile_path(&self, component: &Component) -> PathBuf {
        self.root.join(&component.dockerfile)
    }

    /// Build args that point each stack's base-image `ARG` at the `[base_images]` overrides:
    /// `python = "X"` becomes `PYTHON_IMAGE=X`.
    pub fn base_image_args(&self) -> BTreeMap<String, String> {
        self.base_images
            .iter()
            .map(|(k, v)| (base_image_arg(k), v.clone()))
            .collect()
    }

    /// The environment of a component with every reference resolved.
    pub fn resolved_config(&self, component: &Component) -> BTreeMap<String, String> {
        component
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.resolve(self)))
            .collect()
    }
}

/// Finds the config file: `explicit` when given, else `slipway.toml` in `start` or the nearest
/// directory above it.
pub fn find(explicit: Option<&Path>, start: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        let problem = match std::fs::metadata(p) {
            Ok(m) if m.is_file() => return Ok(p.to_path_buf()),
            Ok(m) if m.is_dir() => "is a directory",
            // A FIFO or a device would block or never end: never opened.
            Ok(_) => "is not a regular file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
            Err(_) => "cannot be read",
        };
        return Err(Fail::usage(format!(
            "config file {} {problem}",
            crate::report::shown_path(p)
        ))
        .hint("pass the path of a slipway.toml, or run `slipway init` to write one")
        .into());
    }
    for dir in start.ancestors() {
        let candidate = dir.join(FILE_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Fail::usage(format!(
        "no {FILE_NAME} in {} or any directory above it",
        start.display()
    ))
    .hint("run `slipway init` to detect your components and write one, or pass --config PATH")
    .into())
}

/// Reads and validates a config file.
///
/// Contexts and Dockerfiles must resolve inside the project root ([`confine`]); use
/// [`load_with`] to allow others.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    load_with(path, Outside::Refuse)
}

/// Whether contexts and Dockerfiles may resolve outside the project root (`--allow-outside-root`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    Refuse,
    Allow,
}

/// [`load`], with paths outside the project root refused or allowed.
pub fn load_with(path: &Path, outside: Outside) -> anyhow::Result<Config> {
    let usage = |e: ConfigError| {
        // A usage error (exit 2) with the error's hint; its text is said once.
        let fail = Fail {
            message: e.to_string(),
            hint: e.hint.clone(),
            exit: Exit::Usage,
        };
        anyhow::Error::new(e).context(fail)
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        Fail::usage(format!(
            "cannot read {}: {e}",
            crate::report::shown_path(path)
        ))
    })?;
    if !meta.is_file() {
        return Err(Fail::usage(format!(
            "config file {} is not a regular file",
            crate::report::shown_path(path)
        ))
        .into());
    }
    let bytes = std::fs::read(path).map_err(|e| {
        Fail::usage(format!(
            "cannot read {}: {e}",
            crate::report::shown_path(path)
        ))
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let before = String::from_utf8_lossy(&bytes[..valid]);
            let (line, column) = line_col(&before, before.len());
            return Err(usage(ConfigError {
                path: path.to_path_buf(),
                line,
                column,
                message: "not UTF-8 text (a TOML file must be UTF-8)".into(),
                hint: Some("pass the path of a slipway.toml".into()),
            }));
        }
    };
    let config = parse(&text, path).map_err(usage)?;
    if outside == Outside::Refuse {
        confine(&config).map_err(usage)?;
    }
    Ok(config)
}

/// The project root of a config file in `dir`: the git work tree holding it, else `dir`
/// (resolved, symlinks followed).
pub fn project_root(dir: &Path) -> PathBuf {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(&dir)
        .to_path_buf()
}

/// `path` with every symlink of its existing part followed; the part that does not exist yet is
/// taken as written (`..` in it removes the name before it).
pub fn resolve(path: &Path) -> PathBuf {
    use std::path::Component as C;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<C> = absolute.components().collect();
    for keep in (1..=parts.len()).rev() {
        let head: PathBuf = parts[..keep].iter().collect();
        if let Ok(mut out) = head.canonicalize() {
            for part in &parts[keep..] {
                match part {
                    C::ParentDir => {
                        out.pop();
                    }
                    C::Normal(n) => out.push(n),
                    _ => {}
                }
            }
            return out;
        }
    }
    absolute
}

/// Refuses a context or Dockerfile that resolves (symlinks followed) outside the project root,
/// naming where the file says it: a `slipway.toml` from someone else (a pull request built in
/// CI) must not send the host's files to a daemon or a registry.
pub fn confine(config: &Config) -> Result<(), ConfigError> {
    let root = project_root(&config.root);
    for c in config.components.values() {
        let checks = [
            ("context", &c.context, config.context_dir(c), c.at.context),
            (
                "dockerfile",
                &c.dockerfile,
                config.dockerfile_path(c),
                c.at.dockerfile,
            ),
        ];
        for (what, given, path, (line, column)) in checks {
            let resolved = resolve(&path);
            if resolved.starts_with(&root) {
                continue;
            }
            let via = if resolved == std::path::absolute(&path).unwrap_or_default() {
                String::new()
            } else {
                format!(" (it resolves to {})", crate::report::shown_path(&resolved))
            };
            return Err(ConfigError {
                path: config.path.clone(),
                line,
                column,
                message: format!(
                    "the {what} of component `{}`, {}, is outside the project root {}{via}",
                    c.name,
                    crate::report::shown_path(given),
                    crate::report::shown_path(&root),
                ),
                hint: Some(
                    "keep contexts and Dockerfiles inside the project (the git work tree \
                     holding slipway.toml, else its directory), or pass --allow-outside-root \
                     to build from outside it on purpose"
                        .into(),
                ),
            });
        }
    }
    Ok(())
}

/// Parses and validates config text; `path` is used for locations and relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| from_toml_error(&e, text, path))?;
    validate(raw, text, path)
}

// ---------------------------------------------------------------------------------------------
// Raw, spanned types: what serde reads.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    app: Spanned<RawApp>,
    #[serde(default)]
    components: BTreeMap<Spanned<String>, RawComponent>,
    #[serde(default)]
    images: Option<RawImages>,
    #[serde(default)]
    base_images: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    cluster: Option<Spanned<RawCluster>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<String>,
    #[serde(default)]
    version: Option<Spanned<String>>,
    #[serde(default)]
    namespace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImages {
    #[serde(default)]
    prefix: Option<Spanned<String>>,
    #[serde(default)]
    tags: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    registry: Option<bool>,
    #[serde(default)]
    cache_from: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    cache_to: Option<Vec<Spanned<String>>>,
}

/// `cluster = "kind:dev"`, or the table `[cluster]` with `target = "kind:dev"`.
enum RawCluster {
    Text(String),
    Table(RawClusterTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterTable {
    #[serde(default)]
    target: Option<Spanned<String>>,
    #[serde(default)]
    registry: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawCluster {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawCluster;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a cluster such as \"kind:dev\", or a table with `target`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCluster, E> {
                Ok(RawCluster::Text(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawCluster, A::Error> {
                RawClusterTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawCluster::Table)
            }
        }
        d.deserialize_any(Either)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    context: Spanned<String>,
    #[serde(default)]
    stack: Option<Spanned<String>>,
    #[serde(default)]
    dockerfile: Option<Spanned<String>>,
    port: Spanned<i64>,
    #[serde(default)]
    health: Option<Spanned<String>>,
    #[serde(default)]
    readiness: Option<Spanned<String>>,
    #[serde(default)]
    build_args: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    build_secrets: Vec<Spanned<String>>,
    #[serde(default)]
    target: Option<Spanned<String>>,
    #[serde(default)]
    config: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    #[serde(default)]
    service: Option<RawService>,
    #[serde(default)]
    replicas: Option<Spanned<i64>>,
    #[serde(default)]
    resources: Resources,
    #[serde(default)]
    autoscaling: Option<Spanned<RawAutoscaling>>,
    #[serde(default)]
    user: Option<Spanned<i64>>,
    #[serde(default)]
    writable: Vec<Spanned<String>>,
    #[serde(default)]
    ingress: Option<Spanned<RawIngress>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    class_name: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// `Prefix` (default), `Exact` or `ImplementationSpecific`, for every path.
    #[serde(default)]
    path_type: Option<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<RawIngressHost>,
    #[serde(default)]
    tls: Vec<RawIngressTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngressHost {
    #[serde(default)]
    host: Option<Spanned<String>>,
    #[serde(default)]
    paths: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngressTls {
    secret_name: Spanned<String>,
    #[serde(default)]
    hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(rename = "type", default)]
    kind: Option<ServiceType>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    node_port: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoscaling {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    min: Option<i64>,
    #[serde(default)]
    max: Option<i64>,
    #[serde(default)]
    target_cpu: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Validation.

struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: None,
        }
    }
}

fn with_hint(mut e: ConfigError, hint: impl Into<String>) -> ConfigError {
    e.hint = Some(hint.into());
    e
}

fn validate(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let cx = Ctx { text, path };
    let root = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));

    let app_span = raw.app.span();
    let app = validate_app(&cx, raw.app.into_inner())?;
    if raw.components.is_empty() {
        return Err(with_hint(
            cx.err(
                app_span,
                "no components: add a [components.NAME] table for each image",
            ),
            "run `slipway init` to detect them",
        ));
    }
    let images = validate_images(&cx, raw.images, &app.name)?;
    let base_images = validate_base_images(&cx, raw.base_images)?;
    let (cluster, cluster_registry) = match raw.cluster {
        None => (ClusterTarget::Auto, None),
        Some(c) => {
            let span = c.span();
            match c.into_inner() {
                RawCluster::Text(t) => {
                    (ClusterTarget::parse(&t).map_err(|m| cx.err(span, m))?, None)
                }
                RawCluster::Table(RawClusterTable { target, registry }) => {
                    let target = match target {
                        Some(t) => {
                            ClusterTarget::parse(t.get_ref()).map_err(|m| cx.err(t.span(), m))?
                        }
                        None => ClusterTarget::Auto,
                    };
                    let registry = match registry {
                        Some(r) if !is_registry_host(r.get_ref()) => {
                            return Err(with_hint(
                                cx.err(
                                    r.span(),
                                    format!(
                                        "cluster registry `{}` is not a registry host (HOST or HOST:PORT, no scheme or path)",
                                        r.get_ref()
                                    ),
                                ),
                                "write it as the Docker daemon pushes to it, e.g. `registry = \"localhost:5001\"`",
                            ));
                        }
                        r => r.map(Spanned::into_inner),
                    };
                    (target, registry)
                }
            }
        }
    };
    let components = validate_components(&cx, &app.name, raw.components)?;
    Ok(Config {
        path: path.to_path_buf(),
        root,
        app,
        components,
        images,
        base_images,
        cluster,
        cluster_registry,
    })
}

fn validate_app(cx: &Ctx, raw: RawApp) -> Result<App, ConfigError> {
    let name = dns_label(cx, &raw.name, "app name")?;
    let version = match raw.version {
        Some(v) => {
            if v.get_ref().is_empty()
                || !v
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
            {
                return Err(cx.err(v.span(), format!("app version `{}` must be non-empty and use only letters, digits and `._-+`", v.get_ref())));
            }
            v.into_inner()
        }
        None => "0.1.0".to_string(),
    };
    let namespace = match &raw.namespace {
        Some(ns) => dns_label(cx, ns, "namespace")?,
        None => name.clone(),
    };
    Ok(App {
        name,
        version,
        namespace,
    })
}

/// `[images]`: the repository prefix (the app name by default) and the extra tags.
fn validate_images(cx: &Ctx, raw: Option<RawImages>, app: &str) -> Result<Images, ConfigError> {
    let Some(img) = raw else {
        return Ok(Images {
            prefix: app.to_string(),
            tags: vec!["latest".to_string()],
            registry: false,
            cache: Default::default(),
        });
    };
    let prefix = match img.prefix {
        Some(p) => {
            if !is_image_repo(p.get_ref()) {
                return Err(cx.err(p.span(), format!("image prefix `{}` is not a valid repository name (lowercase, digits, `.`, `_`, `-`, `/`, optional registry host:port)", p.get_ref())));
            }
            p.into_inner()
        }
        None => app.to_string(),
    };
    let tags = match img.tags {
        Some(tags) => {
            for t in &tags {
                if !is_tag(t.get_ref()) {
                    return Err(cx.err(t.span(), format!("image tag `{}` is not valid: up to 128 letters, digits, `_`, `.`, `-`, not starting with `.` or `-`", t.get_ref())));
                }
            }
            tags.into_iter().map(Spanned::into_inner).collect()
        }
        None => vec!["latest".to_string()],
    };
    let specs = |list: Option<Vec<Spanned<String>>>, direction| {
        list.unwrap_or_default()
            .into_iter()
            .map(|t| crate::cache::parse(t.get_ref(), direction).map_err(|e| cx.err(t.span(), e)))
            .collect::<Result<Vec<_>, _>>()
    };
    let cache = crate::cache::CacheOptions {
        from: specs(img.cache_from, crate::cache::Direction::From)?,
        to: specs(img.cache_to, crate::cache::Direction::To)?,
    }
    .resolved(cx.path.parent().unwrap_or(Path::new(".")));
    Ok(Images {
        prefix,
        tags,
        registry: img.registry.unwrap_or(false),
        cache,
    })
}

fn validate_base_images(
    cx: &Ctx,
    raw: BTreeMap<Spanned<String>, Spanned<String>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut base_images = BTreeMap::new();
    for (k, v) in raw {
        if !BASE_IMAGE_KEYS.contains(&k.get_ref().as_str()) {
            let mut e = cx.err(
                k.span(),
                format!(
                    "unknown base image key `{}`: expected one of {}",
                    k.get_ref(),
                    quoted(BASE_IMAGE_KEYS)
                ),
            );
            if let Some(s) = did_you_mean(k.get_ref(), BASE_IMAGE_KEYS) {
                e = with_hint(e, format!("did you mean `{s}`?"));
            }
            return Err(e);
        }
        if v.get_ref().trim().is_empty() || v.get_ref().contains(char::is_whitespace) {
            return Err(cx.err(
                v.span(),
                format!("base image `{}` is not an image reference", v.get_ref()),
            ));
        }
        base_images.insert(k.into_inner(), v.into_inner());
    }
    Ok(base_images)
}

/// Every component, then every reference from one component's config to another's.
fn validate_components(
    cx: &Ctx,
    app: &str,
    raw: BTreeMap<Spanned<String>, RawComponent>,
) -> Result<BTreeMap<String, Component>, ConfigError> {
    let names: Vec<String> = raw.keys().map(|k| k.get_ref().clone()).collect();
    let mut components = BTreeMap::new();
    let mut references = Vec::new();
    for (key, rc) in raw {
        let cname = dns_label(cx, &key, "component name")?;
        let object = format!("{app}-{cname}");
        if object.len() > 63 {
            return Err(cx.err(key.span(), format!("`{object}` (app name + component name) is longer than 63 characters, the limit of a Kubernetes name")));
        }
        let component = validate_component(cx, cname.clone(), rc, &mut references)?;
        components.insert(cname, component);
    }
    for (span, target, from) in references {
        if !components.contains_key(&target) {
            let mut e = cx.err(
                span,
                format!("`{from}` refers to component `{target}`, which is not defined"),
            );
            let known: Vec<&str> = names.iter().map(String::as_str).collect();
            e = with_hint(
                e,
                match did_you_mean(&target, &known) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("defined components: {}", quoted(&known)),
                },
            );
            return Err(e);
        }
    }
    Ok(components)
}

/// A reference from a config value to a component: where, the component, and the key.
type Reference = (Range<usize>, String, String);

fn validate_component(
    cx: &Ctx,
    name: String,
    rc: RawComponent,
    references: &mut Vec<Reference>,
) -> Result<Component, ConfigError> {
    let context = non_empty_path(cx, &rc.context, "context")?;
    let at = Places {
        context: line_col(cx.text, rc.context.span().start),
        dockerfile: match &rc.dockerfile {
            Some(d) => line_col(cx.text, d.span().start),
            None => line_col(cx.text, rc.context.span().start),
        },
    };
    let dockerfile_explicit = rc.dockerfile.is_some();
    let dockerfile = match &rc.dockerfile {
        Some(d) => non_empty_path(cx, d, "dockerfile")?,
        None => PathBuf::from(format!("dockerfiles/{name}.Dockerfile")),
    };
    let stack = rc.stack.map(Spanned::into_inner);
    let port = port(cx, &rc.port, "port")?;
    let health = match rc.health {
        Some(h) => http_path(cx, &h, "health")?,
        None => "/".to_string(),
    };
    let readiness = match rc.readiness {
        Some(h) => http_path(cx, &h, "readiness")?,
        None => health.clone(),
    };
    let target = target_stage(cx, rc.target)?;
    let (secrets, build_secrets) = secret_names(cx, &rc.secrets, &rc.build_secrets)?;
    let config = config_values(cx, &name, rc.config, &secrets, references)?;
    let build_args = build_args(cx, rc.build_args, &secrets, &build_secrets)?;
    let service = service(cx, rc.service, port)?;
    let replicas = replicas(cx, &rc.replicas)?;
    // An HPA on CPU utilisation needs a CPU request to compute a percentage of: the manifests
    // step gives a default request when the component sets none.
    let autoscaling = autoscaling(cx, rc.autoscaling)?;
    let user = user(cx, &rc.user)?;
    let mut writable = Vec::new();
    for w in &rc.writable {
        if !w.get_ref().starts_with('/') {
            return Err(cx.err(
                w.span(),
                format!("writable path `{}` must be absolute", w.get_ref()),
            ));
        }
        writable.push(w.get_ref().clone());
    }
    let ingress = match rc.ingress {
        Some(i) => Some(validate_ingress(cx, i)?),
        None => None,
    };

    Ok(Component {
        name,
        context,
        stack,
        dockerfile,
        dockerfile_explicit,
        port,
        health,
        readiness,
        build_args,
        build_secrets,
        target,
        config,
        secrets,
        service,
        replicas,
        resources: rc.resources,
        autoscaling,
        user,
        writable,
        ingress,
        at,
    })
}

fn validate_ingress(cx: &Ctx, raw: Spanned<RawIngress>) -> Result<Ingress, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let path_type = match &raw.path_type {
        Some(t) => {
            const TYPES: &[&str] = &["Prefix", "Exact", "ImplementationSpecific"];
            if !TYPES.contains(&t.get_ref().as_str()) {
                return Err(cx.err(
                    t.span(),
                    format!(
                        "ingress path_type `{}` is not one of {}",
                        t.get_ref(),
                        quoted(TYPES)
                    ),
                ));
            }
            t.get_ref().clone()
        }
        None => "Prefix".to_string(),
    };
    let mut hosts = Vec::new();
    for h in raw.hosts {
        let host = h.host.as_ref().map_or("", |s| s.get_ref().as_str());
        let wildcard = host.strip_prefix("*.").unwrap_or(host);
        if !host.is_empty() && !wildcard.split('.').all(is_dns_label) {
            return Err(cx.err(
                h.host.as_ref().map_or(span.clone(), |s| s.span()),
                format!(
                    "ingress host `{host}` is not a DNS name (lowercase labels separated by dots)"
                ),
            ));
        }
        let mut paths = Vec::new();
        for p in &h.paths {
            paths.push((http_path(cx, p, "ingress")?, path_type.clone()));
        }
        if paths.is_empty() {
            paths.push(("/".to_string(), path_type.clone()));
        }
        hosts.push(IngressHost {
            host: host.to_string(),
            paths,
        });
    }
    if hosts.is_empty() {
        hosts.push(IngressHost {
            host: String::new(),
            paths: vec![("/".to_string(), path_type)],
        });
    }
    let mut tls = Vec::new();
    for t in raw.tls {
        if !is_dns_name(t.secret_name.get_ref()) {
            return Err(cx.err(
                t.secret_name.span(),
                format!(
                    "ingress tls secret_name `{}` is not a Secret name",
                    t.secret_name.get_ref()
                ),
            ));
        }
        tls.push(IngressTls {
            secret_name: t.secret_name.into_inner(),
            hosts: t.hosts,
        });
    }
    if let Some(class) = &raw.class_name {
        if !is_dns_name(class) {
            return Err(cx.err(
                span,
                format!("ingress class_name `{class}` is not an IngressClass name"),
            ));
        }
    }
    Ok(Ingress {
        enabled: raw.enabled.unwrap_or(true),
        class_name: raw.class_name.unwrap_or_default(),
        annotations: raw.annotations,
        hosts,
        tls,
    })
}

/// A DNS subdomain name (what Kubernetes wants for most object names).
fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn replicas(cx: &Ctx, raw: &Option<Spanned<i64>>) -> Result<u32, ConfigError> {
    let Some(r) = raw else { return Ok(1) };
    let v = *r.get_ref();
    if !(0..=1000).contains(&v) {
        return Err(cx.err(r.span(), format!("replicas {v} is out of range 0-1000")));
    }
    Ok(v as u32)
}

/// The UID the container runs as: any but root (10001 by default).
fn user(cx: &Ctx, raw: &Option<Spanned<i64>>) -> Result<u32, ConfigError> {
    let Some(u) = raw else { return Ok(10001) };
    let v = *u.get_ref();
    if !(1..=2_147_483_647).contains(&v) {
        return Err(cx.err(
            u.span(),
            format!("user {v} must be a non-root numeric UID (1 or more)"),
        ));
    }
    Ok(v as u32)
}

fn target_stage(cx: &Ctx, raw: Option<Spanned<String>>) -> Result<String, ConfigError> {
    let Some(t) = raw else {
        return Ok("production".to_string());
    };
    if t.get_ref().is_empty()
        || !t
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(cx.err(
            t.span(),
            format!("target stage `{}` is not a valid stage name", t.get_ref()),
        ));
    }
    Ok(t.into_inner())
}

/// The runtime secrets (each once) and the build secrets.
fn secret_names(
    cx: &Ctx,
    raw_secrets: &[Spanned<String>],
    raw_build_secrets: &[Spanned<String>],
) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let mut secrets = Vec::new();
    for s in raw_secrets {
        env_name(cx, s, "secret")?;
        if secrets.contains(s.get_ref()) {
            return Err(cx.err(
                s.span(),
                format!("secret `{}` is listed twice", s.get_ref()),
            ));
        }
        secrets.push(s.get_ref().clone());
    }
    let mut build_secrets = Vec::new();
    for s in raw_build_secrets {
        env_name(cx, s, "build secret")?;
        build_secrets.push(s.get_ref().clone());
    }
    Ok((secrets, build_secrets))
}

/// `config` values (templates that may name other components, noted in `references`).
fn config_values(
    cx: &Ctx,
    component: &str,
    raw: BTreeMap<Spanned<String>, Spanned<String>>,
    secrets: &[String],
    references: &mut Vec<Reference>,
) -> Result<BTreeMap<String, Template>, ConfigError> {
    let mut config = BTreeMap::new();
    for (k, v) in raw {
        env_name(cx, &k, "config key")?;
        if secrets.contains(k.get_ref()) {
            return Err(with_hint(
                cx.err(k.span(), format!("`{}` is both a config value and a secret in component `{component}`", k.get_ref())),
                "secrets hold sensitive values and config holds the rest: keep the key in one of them",
            ));
        }
        let template = Template::parse(v.get_ref()).map_err(|m| cx.err(v.span(), m))?;
        for r in template.references() {
            references.push((v.span(), r.to_string(), format!("config.{}", k.get_ref())));
        }
        config.insert(k.into_inner(), template);
    }
    Ok(config)
}

fn build_args(
    cx: &Ctx,
    raw: BTreeMap<Spanned<String>, String>,
    secrets: &[String],
    build_secrets: &[String],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut build_args = BTreeMap::new();
    for (k, v) in raw {
        env_name(cx, &k, "build arg")?;
        if secrets.contains(k.get_ref()) || build_secrets.contains(k.get_ref()) {
            return Err(with_hint(
                cx.err(k.span(), format!("`{}` is a secret and cannot be a build arg: build args end up in the image history", k.get_ref())),
                "list it in `build_secrets` to mount it during the build without storing it",
            ));
        }
        build_args.insert(k.into_inner(), v);
    }
    Ok(build_args)
}

/// The Service (ClusterIP on the component's port by default).
fn service(cx: &Ctx, raw: Option<RawService>, port: u16) -> Result<Service, ConfigError> {
    let Some(s) = raw else {
        return Ok(Service {
            kind: ServiceType::ClusterIP,
            port,
            node_port: None,
        });
    };
    let kind = s.kind.unwrap_or(ServiceType::ClusterIP);
    let sport = match &s.port {
        Some(p) => self::port(cx, p, "service port")?,
        None => port,
    };
    let node_port = match &s.node_port {
        Some(np) => {
            if kind == ServiceType::ClusterIP {
                return Err(cx.err(
                    np.span(),
                    "node_port needs service type NodePort or LoadBalancer",
                ));
            }
            let v = *np.get_ref();
            if !(30000..=32767).contains(&v) {
                return Err(cx.err(
                    np.span(),
                    format!("node port {v} is out of range: Kubernetes allows 30000-32767"),
                ));
            }
            Some(v as u16)
        }
        None => None,
    };
    Ok(Service {
        kind,
        port: sport,
        node_port,
    })
}

fn autoscaling(cx: &Ctx, raw: Option<Spanned<RawAutoscaling>>) -> Result<Autoscaling, ConfigError> {
    let Some(a) = raw else {
        return Ok(Autoscaling {
            enabled: false,
            min: 1,
            max: 3,
            target_cpu: 80,
        });
    };
    let span = a.span();
    let a = a.into_inner();
    let min = a.min.unwrap_or(1);
    let max = a.max.unwrap_or(min.max(3));
    let target_cpu = a.target_cpu.unwrap_or(80);
    if min < 1 || max < min || max > 1000 {
        return Err(cx.err(
            span,
            format!("autoscaling needs 1 <= min <= max <= 1000 (min {min}, max {max})"),
        ));
    }
    if !(1..=100).contains(&target_cpu) {
        return Err(cx.err(
            span,
            format!("autoscaling target_cpu {target_cpu} must be a percentage 1-100"),
        ));
    }
    Ok(Autoscaling {
        enabled: a.enabled.unwrap_or(true),
        min: min as u32,
        max: max as u32,
        target_cpu: target_cpu as u32,
    })
}

fn dns_label(cx: &Ctx, s: &Spanned<String>, what: &str) -> Result<String, ConfigError> {
    if is_dns_label(s.get_ref()) {
        Ok(s.get_ref().clone())
    } else {
        Err(with_hint(
            cx.err(s.span(), format!("{what} `{}` is not a DNS-1123 label", s.get_ref())),
            "use 1-63 lowercase letters, digits and `-`, starting and ending with a letter or digit",
        ))
    }
}

fn env_name(cx: &Ctx, s: &Spanned<String>, what: &str) -> Result<(), ConfigError> {
    let v = s.get_ref();
    let ok = !v.is_empty()
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(cx.err(s.span(), format!("{what} `{v}` is not a valid environment variable name (letters, digits and `_`, not starting with a digit)")))
    }
}

fn port(cx: &Ctx, p: &Spanned<i64>, what: &str) -> Result<u16, ConfigError> {
    let v = *p.get_ref();
    if (1..=65535).contains(&v) {
        Ok(v as u16)
    } else {
        Err(cx.err(p.span(), format!("{what} {v} is out of range 1-65535")))
    }
}

fn http_path(cx: &Ctx, p: &Spanned<String>, what: &str) -> Result<String, ConfigError> {
    let v = p.get_ref();
    if v.starts_with('/') && !v.contains(char::is_whitespace) {
        Ok(v.clone())
    } else {
        Err(cx.err(
            p.span(),
            format!("{what} path `{v}` must be an HTTP path starting with `/`"),
        ))
    }
}

fn non_empty_path(cx: &Ctx, p: &Spanned<String>, what: &str) -> Result<PathBuf, ConfigError> {
    if p.get_ref().trim().is_empty() {
        Err(cx.err(p.span(), format!("{what} must not be empty")))
    } else {
        Ok(PathBuf::from(p.get_ref()))
    }
}

/// A DNS-1123 label: 1-63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `localhost:5001`, `registry.local`, `[::1]:5000`: a host and an optional port, as an image
/// reference's first component names a registry.
pub fn is_registry_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, Some(p)),
        _ => (s, None),
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => {
            !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

fn is_image_repo(s: &str) -> bool {
    if s.is_empty() || s.starts_with('/') || s.ends_with('/') {
        return false;
    }
    let mut parts = s.split('/').peekable();
    let first = parts.peek().copied().unwrap_or_default();
    // A first component with `.` or `:` or `localhost` is a registry host.
    let has_host =
        s.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    s.split('/').enumerate().all(|(i, part)| {
        if i == 0 && has_host {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        } else {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        }
    })
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest candidate, if close enough to be a likely typo.
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(input, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// serde's words for what a key must hold, in the words of the file: `expected i64` and
/// `expected struct RawCluster` name Rust types the user never wrote.
fn plain_expected(message: &str) -> String {
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let words = match expected.trim() {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "usize" | "u128" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" | "a boolean" => "true or false",
        "a borrowed string" | "char" | "a string" => "a string",
        e if e.starts_with("struct ") || e.starts_with("a map") || e == "map" => "a table",
        e if e.starts_with("a sequence") || e.starts_with("seq") => "an array",
        e if e.starts_with("enum ") || e.starts_with("variant identifier") => {
            "one of the values allowed here"
        }
        e => e,
    };
    let head = match head.strip_prefix("invalid type: ") {
        Some("sequence") => "invalid type: an array",
        Some("map") => "invalid type: a table",
        _ => head,
    };
    format!("{head}, expected {words}")
}

fn from_toml_error(e: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let message = plain_expected(e.message().trim());
    let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
    let mut err = ConfigError {
        path: path.to_path_buf(),
        line,
        column,
        message: message.clone(),
        hint: None,
    };
    // serde's message: "unknown field `prot`, expected one of `a`, `b`" / "expected `a` or `b`".
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            err.message = format!("unknown key `{field}`");
            if !candidates.is_empty() {
                err.message
                    .push_str(&format!(" (expected one of {})", quoted(&candidates)));
            }
            if let Some(s) = did_you_mean(field, &candidates) {
                err.hint = Some(format!("did you mean `{s}`?"));
            } else if field == "cluster" {
                // A top-level key written after a table belongs to that table in TOML.
                err.hint = Some(
                    "`cluster = \"kind:NAME\"` goes at the top of the file, before the first \
                     [table] (or write it as a [cluster] table with `target = \"kind:NAME\"`)"
                        .into(),
                );
            }
        }
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((variant, expected)) = rest.split_once('`') {
            let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            if let Some(s) = did_you_mean(variant, &candidates) {
                err.hint = Some(format!("did you mean `{s}`?"));
            }
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[app]
name = "taskboard"
version = "1.2.0"

[images]
prefix = "slipway"
tags = ["latest", "dev"]

[base_images]
python = "slipway-test/python:3.11"

[cluster]
target = "kind:dev"

[components.backend]
context = "contexts/backend"
port = 8000
health = "/healthz"
readiness = "/readyz"
secrets = ["DATABASE_URL", "JWT_SECRET"]
config = { LOG_LEVEL = "info" }

[components.frontend]
context = "contexts/frontend"
port = 3000
health = "/api/healthz"
build_args = { NEXT_PUBLIC_BACKEND_URL = "http://localhost:30080" }
config = { BACKEND_URL = "${backend.url}", API_HOST = "${backend.host}:${backend.port}" }
service = { type = "NodePort", node_port = 30080 }
autoscaling = { enabled = true, min = 1, max = 4, target_cpu = 70 }
resources = { requests = { cpu = "100m", memory = "128Mi" } }
"#;

    fn parse_str(s: &str) -> Result<Config, ConfigError> {
        parse(s, Path::new("/repo/slipway.toml"))
    }

    #[test]
    fn reads_a_complete_file() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.app.namespace, "taskboard");
        assert_eq!(c.root, Path::new("/repo"));
        assert_eq!(c.cluster, ClusterTarget::Kind("dev".into()));
        // The string form the hints name.
        let text = GOOD
            .replace("[cluster]\ntarget = \"kind:dev\"\n", "")
            .replace("[app]", "cluster = \"kind:uxr\"\n[app]");
        let string_form = parse_str(&text).unwrap();
        assert_eq!(string_form.cluster, ClusterTarget::Kind("uxr".into()));
        let fe = &c.components["frontend"];
        assert_eq!(fe.dockerfile, Path::new("dockerfiles/frontend.Dockerfile"));
        assert!(!fe.dockerfile_explicit);
        assert_eq!(fe.service.kind, ServiceType::NodePort);
        assert_eq!(fe.service.port, 3000);
        assert_eq!(fe.service.node_port, Some(30080));
        assert_eq!(fe.target, "production");
        assert!(fe.autoscaling.enabled);
        let env = c.resolved_config(fe);
        assert_eq!(
            env["BACKEND_URL"],
            "http://taskboard-backend.taskboard.svc:8000"
        );
        assert_eq!(env["API_HOST"], "taskboard-backend.taskboard.svc:8000");
        assert_eq!(c.image_repo("backend"), "slipway/backend");
        assert_eq!(c.components["backend"].readiness, "/readyz");
    }

    fn err_of(s: &str) -> ConfigError {
        parse_str(s).unwrap_err()
    }

    #[test]
    fn build_cache_entries_are_checked_where_they_are_written() {
        let text = replace(
            "tags = [\"latest\", \"dev\"]\n",
            "tags = [\"latest\", \"dev\"]\ncache_from = [\"reg:5000/cache\", \"type=local,src=ci\"]\ncache_to = [\"type=local,dest=ci\"]\n",
        );
        let c = parse_str(&text).unwrap();
        use crate::cache::CacheSpec;
        assert_eq!(
            c.images.cache.from,
            [
                CacheSpec::Registry {
                    reference: "reg:5000/cache".into()
                },
                CacheSpec::Local {
                    dir: "/repo/ci".into()
                }
            ]
        );
        assert_eq!(
            c.images.cache.to,
            [CacheSpec::Local {
                dir: "/repo/ci".into()
            }]
        );
        let text = replace(
            "tags = [\"latest\", \"dev\"]\n",
            "tags = [\"latest\", \"dev\"]\ncache_to = [\"type=gha\"]\n",
        );
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "cache_to"));
        assert!(
            e.message.contains("type=gha is not supported"),
            "{}",
            e.message
        );
    }

    fn replace(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "fixture lacks {from}");
        GOOD.replacen(from, to, 1)
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn an_ingress_table_turns_the_ingress_on() {
        let c = parse_str(&format!(
            "{GOOD}\n[components.backend.ingress]\nclass_name = \"nginx\"\nhosts = [{{ host = \"tb.example.com\", paths = [\"/api\"] }}]\n"
        ))
        .unwrap();
        let i = c.components["backend"].ingress.clone().unwrap();
        assert!(i.enabled);
        assert_eq!(i.class_name, "nginx");
        assert_eq!(
            i.hosts[0].paths,
            [("/api".to_string(), "Prefix".to_string())]
        );
        assert!(c.components["frontend"].ingress.is_none());
        let bare = parse_str(&format!("{GOOD}\n[components.backend.ingress]\n")).unwrap();
        let i = bare.components["backend"].ingress.clone().unwrap();
        assert_eq!(
            (i.hosts[0].host.as_str(), i.hosts[0].paths[0].0.as_str()),
            ("", "/")
        );
        let e = err_of(&format!(
            "{GOOD}\n[components.backend.ingress]\npath_type = \"prefix\"\n"
        ));
        assert!(e.message.contains("path_type"), "{e}");
        let e = err_of(&format!(
            "{GOOD}\n[components.backend.ingress]\nhosts = [{{ host = \"Bad_Host\" }}]\n"
        ));
        assert!(e.message.contains("not a DNS name"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_line_and_suggests() {
        let text = replace("port = 8000", "prot = 8000");
        let e = err_of(&text);
        assert_eq!(e.path, Path::new("/repo/slipway.toml"));
        assert_eq!(e.line, line_of(&text, "prot = 8000"));
        assert_eq!(e.column, 1);
        assert!(e.message.contains("unknown key `prot`"), "{}", e.message);
        assert_eq!(e.hint.as_deref(), Some("did you mean `port`?"));
        assert!(e
            .to_string()
            .starts_with(&format!("/repo/slipway.toml:{}:1:", e.line)));
    }

    #[test]
    fn unknown_top_level_table_is_rejected() {
        let text = format!("{GOOD}\n[imagez]\nprefix = \"x\"\n");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "[imagez]"));
        assert_eq!(e.hint.as_deref(), Some("did you mean `images`?"));
    }

    #[test]
    fn bad_app_name() {
        let text = replace("name = \"taskboard\"", "name = \"Task_Board\"");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "Task_Board"));
        assert_eq!(e.column, 8);
        assert!(e.message.contains("not a DNS-1123 label"));
    }

    #[test]
    fn bad_component_name() {
        let text = replace("[components.backend]", "[components.Back_End]");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "[components.Back_End]"));
        assert!(
            e.message.contains("component name `Back_End`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn port_out_of_range() {
        for bad in ["70000", "0", "-1"] {
            let text = replace("port = 8000", &format!("port = {bad}"));
            let e = err_of(&text);
            assert_eq!(e.line, line_of(&text, &format!("port = {bad}")), "{bad}");
            assert_eq!(e.column, 8);
            assert!(e.message.contains("out of range 1-65535"), "{}", e.message);
        }
    }

    #[test]
    fn node_port_out_of_range() {
        let text = replace("node_port = 30080", "node_port = 8080");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "node_port = 8080"));
        assert!(e.message.contains("30000-32767"));
    }

    #[test]
    fn config_key_that_is_also_a_secret() {
        let text = replace("LOG_LEVEL = \"info\"", "JWT_SECRET = \"oops\"");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "JWT_SECRET = \"oops\""));
        assert!(e.message.contains("both a config value and a secret"));
    }

    #[test]
    fn reference_to_a_missing_component() {
        let text = replace("${backend.url}", "${backnd.url}");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "${backnd.url}"));
        assert!(e
            .message
            .contains("component `backnd`, which is not defined"));
        assert_eq!(e.hint.as_deref(), Some("did you mean `backend`?"));
    }

    #[test]
    fn malformed_reference() {
        let text = replace("${backend.url}", "${backend.uri}");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "${backend.uri}"));
        assert!(e.message.contains("unknown attribute `uri`"));
    }

    #[test]
    fn bad_service_type_suggests() {
        let text = replace("type = \"NodePort\"", "type = \"Nodeport\"");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "Nodeport"));
        assert_eq!(e.hint.as_deref(), Some("did you mean `NodePort`?"));
    }

    #[test]
    fn bad_cluster_target() {
        let text = replace("kind:dev", "k8s:dev");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "k8s:dev"));
        assert!(e.message.contains("unknown cluster"));
    }

    #[test]
    fn unknown_base_image_key() {
        let text = replace("python = \"slipway", "pyhton = \"slipway");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "pyhton"));
        assert_eq!(e.hint.as_deref(), Some("did you mean `python`?"));
    }

    #[test]
    fn syntax_error_is_located() {
        let text = replace("port = 8000", "port = ");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "port = "));
    }

    #[test]
    fn secret_as_build_arg_is_rejected() {
        let text = replace(
            "NEXT_PUBLIC_BACKEND_URL = ",
            "JWT_SECRET = \"x\", NEXT_PUBLIC_BACKEND_URL = ",
        );
        // JWT_SECRET is a backend secret; for the frontend make it one too.
        let text = text.replacen("port = 3000", "port = 3000\nsecrets = [\"JWT_SECRET\"]", 1);
        let e = err_of(&text);
        assert!(e.message.contains("cannot be a build arg"), "{}", e.message);
        assert_eq!(e.line, line_of(&text, "JWT_SECRET = \"x\""));
    }

    #[test]
    fn bad_env_name() {
        let text = replace("\"DATABASE_URL\"", "\"DATABASE-URL\"");
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "DATABASE-URL"));
        assert!(e.message.contains("not a valid environment variable name"));
    }

    #[test]
    fn missing_app_table() {
        let e = err_of("[components.a]\ncontext = \".\"\nport = 1\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("app"), "{}", e.message);
    }

    #[test]
    fn paths_are_confined_to_the_project_root_symlinks_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proj");
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        let text = |context: &str, dockerfile: &str| {
            format!("[app]\nname = \"a\"\n\n[components.web]\ncontext = \"{context}\"\ndockerfile = \"{dockerfile}\"\nport = 80\n")
        };
        let check = |context: &str, dockerfile: &str| {
            let path = root.join("slipway.toml");
            confine(&parse(&text(context, dockerfile), &path).unwrap())
        };
        assert!(check("app", "app/Dockerfile").is_ok());
        assert!(check("app/new/../x", "not-yet/../Dockerfile").is_ok());
        for (context, dockerfile, line) in [
            ("/etc", "app/Dockerfile", 5),
            ("../../..", "app/Dockerfile", 5),
            ("etc-link", "app/Dockerfile", 5),
            ("app/missing/../../..", "app/Dockerfile", 5),
            ("app", "/etc/passwd", 6),
            ("app", "etc-link/passwd", 6),
        ] {
            let e = check(context, dockerfile).unwrap_err();
            assert_eq!(
                (e.line, e.column),
                (line, if line == 5 { 11 } else { 14 }),
                "{e}"
            );
            assert!(e.message.contains("outside the project root"), "{e}");
        }
        // A git work tree is the root, wherever slipway.toml is in it.
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        assert_eq!(project_root(&root), dir.path().canonicalize().unwrap());
    }

    #[test]
    fn templates() {
        let t = Template::parse("a$$b${x.port}c$d").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["x"]);
        assert!(Template::parse("${x.url").is_err());
        assert!(Template::parse("${x}").is_err());
    }

    #[test]
    fn cluster_targets() {
        assert_eq!(
            ClusterTarget::parse("kind").unwrap(),
            ClusterTarget::Kind("kind".into())
        );
        assert_eq!(
            ClusterTarget::parse("minikube:dev").unwrap(),
            ClusterTarget::Minikube("dev".into())
        );
        assert_eq!(
            ClusterTarget::parse("k3d:dev").unwrap(),
            ClusterTarget::K3d("dev".into())
        );
        assert_eq!(
            ClusterTarget::parse("k3d").unwrap().to_string(),
            "k3d:k3s-default"
        );
        assert!(ClusterTarget::parse("kind:Bad_Name").is_err());
        let bare = ClusterTarget::parse("uxr").unwrap_err();
        let table = "[cluster]\ntarget = \"kind:dev\"\n";
        for bad in [
            GOOD.replace("port = 8000", "port = \"abc\""),
            GOOD.replace("port = 8000", "port = 70000"),
            format!("cluster = 5\n{}", GOOD.replace(table, "")),
            GOOD.replace(table, "[cluster]\ntarget = [1]\n"),
            GOOD.replace("enabled = true", "enabled = \"yes\""),
            GOOD.replace("secrets = [", "secrets = 3\nx = ["),
        ] {
            let e = parse_str(&bad).unwrap_err().to_string();
            for rust in ["i64", "u16", "u32", "struct ", "Raw", "bool", "sequence"] {
                assert!(!e.contains(rust), "{e}");
            }
        }
        assert!(bare.contains("did you mean `kind:uxr`"), "{bare}");
        assert_eq!(
            ClusterTarget::parse("kind:x").unwrap().to_string(),
            "kind:x"
        );
    }

    #[test]
    fn cluster_registry() {
        let c = parse_str(&replace(
            "target = \"kind:dev\"",
            "target = \"kind:dev\"\nregistry = \"localhost:5001\"",
        ))
        .unwrap();
        assert_eq!(c.cluster, ClusterTarget::Kind("dev".into()));
        assert_eq!(c.cluster_registry.as_deref(), Some("localhost:5001"));
        assert_eq!(parse_str(GOOD).unwrap().cluster_registry, None);
        let text = replace(
            "target = \"kind:dev\"",
            "registry = \"http://localhost:5001/v2\"",
        );
        let e = err_of(&text);
        assert_eq!(e.line, line_of(&text, "registry ="));
        assert!(e.message.contains("not a registry host"), "{}", e.message);
        assert!(e.hint.unwrap().contains("localhost:5001"));
        for good in [
            "localhost:5001",
            "kind-registry:5000",
            "registry.local",
            "[::1]:5000",
        ] {
            assert!(is_registry_host(good), "{good}");
        }
        for bad in [
            "",
            "localhost:",
            "localhost:99999",
            "a/b",
            "http://x",
            "-x:1",
            "a b",
        ] {
            assert!(!is_registry_host(bad), "{bad}");
        }
    }

    #[test]
    fn image_names() {
        assert!(is_image_repo("slipway"));
        assert!(is_image_repo("localhost:5000/team/app"));
        assert!(is_image_repo("registry.example.com/team"));
        assert!(!is_image_repo("Team"));
        assert!(!is_image_repo("a//b"));
        assert!(is_tag("v1.2.3"));
        assert!(!is_tag("-x"));
    }
}

//! The current kube context, read the way kubectl reads it.
//!
//! Cluster detection starts from the context the user's kubectl points at: kind names its
//! contexts `kind-NAME`, k3d `k3d-NAME`, and minikube names them after the profile and marks them with a
//! `minikube.sigs.k8s.io` extension. Only what detection needs is read.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ClusterTarget;

/// The context in use and what kind of cluster it names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KubeContext {
    /// The kubeconfig file it came from.
    pub file: PathBuf,
    pub name: String,
    /// `Kind`, `Minikube`, `K3d`, or `None` for any other cluster.
    pub cluster: ClusterTarget,
}

#[derive(Deserialize, Default)]
struct KubeConfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    #[serde(default)]
    context: Option<ContextBody>,
}

#[derive(Deserialize, Default)]
struct ContextBody {
    #[serde(default)]
    extensions: Vec<NamedExtension>,
}

#[derive(Deserialize)]
struct NamedExtension {
    #[serde(default)]
    extension: Option<serde_norway::Value>,
}

/// The kubeconfig files kubectl would read: `KUBECONFIG` (a `:`-separated list), else
/// `~/.kube/config`.
pub fn files() -> Vec<PathBuf> {
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(list) => std::env::split_paths(&list).collect(),
        None => std::env::var_os("HOME")
            .map(|h| vec![PathBuf::from(h).join(".kube/config")])
            .unwrap_or_default(),
    }
}

/// The current context, if any file names one. Unreadable or malformed files are skipped,
/// as a missing kube context is a normal state for slipway.
pub fn current() -> Option<KubeContext> {
    files().iter().find_map(|f| read(f))
}

fn read(file: &Path) -> Option<KubeContext> {
    let text = std::fs::read_to_string(file).ok()?;
    let cfg: KubeConfig = serde_norway::from_str(&text).ok()?;
    let name = cfg.current_context.filter(|c| !c.is_empty())?;
    let is_minikube = cfg.contexts.iter().any(|c| {
        c.name == name
            && c.context.as_ref().is_some_and(|b| {
                b.extensions.iter().any(|e| {
                    e.extension
                        .as_ref()
                        .and_then(|x| x.get("provider"))
                        .and_then(|p| p.as_str())
                        == Some("minikube.sigs.k8s.io")
                })
            })
    });
    let cluster = classify(&name, is_minikube);
    Some(KubeContext {
        file: file.to_path_buf(),
        name,
        cluster,
    })
}

/// What a context name says about its cluster.
pub fn classify(name: &str, minikube_extension: bool) -> ClusterTarget {
    if let Some(n) = name.strip_prefix("kind-") {
        return ClusterTarget::Kind(n.to_string());
    }
    if let Some(n) = name.strip_prefix("k3d-") {
        return ClusterTarget::K3d(n.to_string());
    }
    if minikube_extension || name == "minikube" {
        return ClusterTarget::Minikube(name.to_string());
    }
    ClusterTarget::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kind_and_minikube_contexts() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config");
        std::fs::write(&f, "apiVersion: v1\ncurrent-context: kind-dev\ncontexts:\n- name: kind-dev\n  context: {cluster: kind-dev}\n").unwrap();
        assert_eq!(read(&f).unwrap().cluster, ClusterTarget::Kind("dev".into()));

        std::fs::write(&f, "current-context: work\ncontexts:\n- name: work\n  context:\n    cluster: work\n    extensions:\n    - name: context_info\n      extension:\n        provider: minikube.sigs.k8s.io\n").unwrap();
        assert_eq!(
            read(&f).unwrap().cluster,
            ClusterTarget::Minikube("work".into())
        );

        std::fs::write(&f, "current-context: k3d-dev\n").unwrap();
        assert_eq!(read(&f).unwrap().cluster, ClusterTarget::K3d("dev".into()));

        std::fs::write(&f, "current-context: prod-eks\n").unwrap();
        assert_eq!(read(&f).unwrap().cluster, ClusterTarget::None);

        std::fs::write(&f, "not: [yaml").unwrap();
        assert_eq!(read(&f), None);
    }
}

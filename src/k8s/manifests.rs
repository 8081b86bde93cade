//! Plain Kubernetes manifests, values filled in, for `kubectl apply -f k8s/`.
//!
//! Layout: one file per component, `COMPONENT.yaml`, with its ServiceAccount, ConfigMap,
//! Service, Deployment, HorizontalPodAutoscaler and Ingress (in the order Helm installs kinds), and its
//! Secret apart in `COMPONENT.secret.yaml` (mode 0600, kept out of git by the directory's
//! `.gitignore`), plus `00-namespace.yaml` on request (first in `kubectl apply -f`'s file
//! order). Keys come in the order `kubectl` shows them; maps from the configuration are sorted.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::yaml::{map, seq, stream, Yaml};
use super::{checksum, ComponentModel, Model, Options, OutputFile, SecretValues, HEADER};
use crate::config::{Config, ServiceType};
use crate::error::Fail;

/// The `app.kubernetes.io/managed-by` value of plain manifests (the chart's is `Helm`).
pub const MANAGED_BY: &str = "slipway";

/// The `.gitignore` written into the manifests directory.
pub const GITIGNORE: &str =
    "# Written by slipway: Secret manifests hold secret values.\n*.secret.yaml\n";

/// Renders every manifest. `images` maps each component to the reference to deploy;
/// `secrets` holds the values of the components' secrets (missing ones are an error that
/// names them, unless `opts.allow_missing_secrets`, which writes empty values).
pub fn render_manifests(
    config: &Config,
    images: &BTreeMap<String, String>,
    secrets: &SecretValues,
    opts: &Options,
) -> anyhow::Result<Vec<OutputFile>> {
    let model = Model::new(config, images, opts)?;
    let missing = missing_secrets(config, secrets);
    if !missing.is_empty() && !opts.allow_missing_secrets {
        return Err(Fail::usage(format!(
            "no value for secret{} {}",
            if missing.len() == 1 { "" } else { "s" },
            describe_missing(&missing)
        ))
        .hint("export them, name a .env file with --env-file PATH, or pass --allow-missing-secrets to write empty values")
        .into());
    }
    let mut files = Vec::new();
    if opts.namespace_manifest {
        files.push(file("00-namespace.yaml", &[namespace(&model)]));
    }
    for c in &model.components {
        let values: BTreeMap<String, String> = c
            .secrets
            .iter()
            .map(|s| (s.clone(), secrets.get(s).unwrap_or_default().to_string()))
            .collect();
        if !values.is_empty() {
            let mut f = file(
                format!("{}.secret.yaml", c.name),
                &[secret(&model, c, &values)],
            );
            f.mode = 0o600;
            files.push(f);
        }
        let mut docs = vec![service_account(&model, c)];
        if !c.config.is_empty() {
            docs.push(config_map(&model, c));
        }
        docs.push(service(&model, c));
        docs.push(deployment(&model, c, &values));
        if let Some(hpa) = autoscaler(&model, c) {
            docs.push(hpa);
        }
        if let Some(ingress) = ingress(&model, c) {
            docs.push(ingress);
        }
        files.push(file(format!("{}.yaml", c.name), &docs));
    }
    files.push(OutputFile::new(".gitignore", GITIGNORE.to_string()));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// `(component, secret)` pairs with no value.
pub fn missing_secrets(config: &Config, secrets: &SecretValues) -> Vec<(String, String)> {
    config
        .components
        .iter()
        .flat_map(|(name, c)| {
            c.secrets
                .iter()
                .filter(|s| secrets.get(s).is_none())
                .map(move |s| (name.clone(), s.clone()))
        })
        .collect()
}

/// `DATABASE_URL, JWT_SECRET (backend); X (frontend)`: names only.
pub fn describe_missing(missing: &[(String, String)]) -> String {
    let mut by_component: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (c, s) in missing {
        by_component.entry(c).or_default().push(s);
    }
    by_component
        .iter()
        .map(|(c, names)| format!("{} ({c})", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn file(path: impl Into<std::path::PathBuf>, docs: &[Yaml]) -> OutputFile {
    OutputFile::new(path, format!("{HEADER}\n{}", stream(docs)))
}

/// `app.kubernetes.io/name`, `instance` and `component`: what selects a component's pods.
pub fn selector_labels(model: &Model, c: &ComponentModel) -> Yaml {
    map([
        ("app.kubernetes.io/name", model.app.as_str()),
        ("app.kubernetes.io/instance", model.app.as_str()),
        ("app.kubernetes.io/component", c.name.as_str()),
    ])
}

fn labels(model: &Model, c: &ComponentModel) -> Yaml {
    let mut l = selector_labels(model, c);
    l.push("app.kubernetes.io/version", model.version_label.as_str());
    l.push("app.kubernetes.io/part-of", model.app.as_str());
    l.push("app.kubernetes.io/managed-by", MANAGED_BY);
    l
}

fn metadata(model: &Model, c: &ComponentModel) -> Yaml {
    map([
        ("name", Yaml::from(&c.object_name)),
        ("namespace", Yaml::from(&model.namespace)),
        ("labels", labels(model, c)),
    ])
}

fn header(api_version: &str, kind: &str, metadata: Yaml) -> Yaml {
    map([
        ("apiVersion", Yaml::from(api_version)),
        ("kind", Yaml::from(kind)),
        ("metadata", metadata),
    ])
}

fn namespace(model: &Model) -> Yaml {
    header(
        "v1",
        "Namespace",
        map([
            ("name", Yaml::from(&model.namespace)),
            (
                "labels",
                map([
                    ("app.kubernetes.io/part-of", model.app.as_str()),
                    ("app.kubernetes.io/managed-by", MANAGED_BY),
                    // The pods meet the `restricted` Pod Security Standard; say so.
                    ("pod-security.kubernetes.io/enforce", "restricted"),
                ]),
            ),
        ]),
    )
}

fn service_account(model: &Model, c: &ComponentModel) -> Yaml {
    let mut y = header("v1", "ServiceAccount", metadata(model, c));
    y.push("automountServiceAccountToken", false);
    y
}

fn config_map(model: &Model, c: &ComponentModel) -> Yaml {
    let mut y = header("v1", "ConfigMap", metadata(model, c));
    y.push(
        "data",
        map(c.config.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    y
}

fn secret(model: &Model, c: &ComponentModel, values: &BTreeMap<String, String>) -> Yaml {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut y = header("v1", "Secret", metadata(model, c));
    y.push("type", "Opaque");
    y.push(
        "data",
        map(values.iter().map(|(k, v)| (k.as_str(), b64.encode(v)))),
    );
    y
}

fn service(model: &Model, c: &ComponentModel) -> Yaml {
    let mut port = map([
        ("name", Yaml::from("http")),
        ("port", Yaml::from(c.service_port)),
        ("targetPort", Yaml::from("http")),
        ("protocol", Yaml::from("TCP")),
    ]);
    if let Some(np) = c.node_port {
        port.push("nodePort", np);
    }
    let kind = match c.service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let mut y = header("v1", "Service", metadata(model, c));
    y.push(
        "spec",
        map([
            ("type", Yaml::from(kind)),
            ("selector", selector_labels(model, c)),
            ("ports", seq([port])),
        ]),
    );
    y
}

fn deployment(model: &Model, c: &ComponentModel, secrets: &BTreeMap<String, String>) -> Yaml {
    let mut annotations = Vec::new();
    if !c.config.is_empty() {
        annotations.push(("checksum/config", Yaml::from(checksum(&c.config))));
    }
    if !secrets.is_empty() {
        annotations.push(("checksum/secret", Yaml::from(checksum(secrets))));
    }
    let mut pod_meta = map([("labels", labels(model, c))]);
    if !annotations.is_empty() {
        pod_meta.push("annotations", map(annotations));
    }

    let mut env_from = Vec::new();
    if !c.config.is_empty() {
        env_from.push(map([(
            "configMapRef",
            map([("name", c.object_name.as_str())]),
        )]));
    }
    if !c.secrets.is_empty() {
        env_from.push(map([(
            "secretRef",
            map([("name", c.object_name.as_str())]),
        )]));
    }

    let mut container = map([
        ("name", Yaml::from(&c.name)),
        ("image", Yaml::from(&c.image.full)),
        ("imagePullPolicy", Yaml::from(c.pull_policy.as_str())),
        (
            "ports",
            seq([map([
                ("name", Yaml::from("http")),
                ("containerPort", Yaml::from(c.port)),
                ("protocol", Yaml::from("TCP")),
            ])]),
        ),
    ]);
    if !env_from.is_empty() {
        container.push("envFrom", Yaml::Seq(env_from));
    }
    for (key, probe) in c.probes() {
        container.push(key, probe);
    }
    container.push("resources", c.resources_yaml());
    container.push("securityContext", c.container_security_context());
    container.push(
        "volumeMounts",
        seq(c
            .writable
            .iter()
            .map(|w| map([("name", w.name.as_str()), ("mountPath", w.path.as_str())]))),
    );

    let pod_spec = map([
        ("serviceAccountName", Yaml::from(&c.object_name)),
        ("automountServiceAccountToken", Yaml::from(false)),
        ("securityContext", c.pod_security_context()),
        ("containers", seq([container])),
        (
            "volumes",
            seq(c.writable.iter().map(|w| {
                map([
                    ("name", Yaml::from(&w.name)),
                    ("emptyDir", map(Vec::<(String, Yaml)>::new())),
                ])
            })),
        ),
    ]);

    let mut spec = map(Vec::<(String, Yaml)>::new());
    // With an autoscaler the replica count is its business: applying the manifests again
    // must not reset it.
    if c.autoscaling.is_none() {
        spec.push("replicas", c.replicas);
    }
    spec.push(
        "selector",
        map([("matchLabels", selector_labels(model, c))]),
    );
    spec.push(
        "template",
        map([("metadata", pod_meta), ("spec", pod_spec)]),
    );
    let mut y = header("apps/v1", "Deployment", metadata(model, c));
    y.push("spec", spec);
    y
}

fn autoscaler(model: &Model, c: &ComponentModel) -> Option<Yaml> {
    let (min, max, cpu) = c.autoscaling?;
    let mut y = header(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        metadata(model, c),
    );
    y.push(
        "spec",
        map([
            (
                "scaleTargetRef",
                map([
                    ("apiVersion", "apps/v1"),
                    ("kind", "Deployment"),
                    ("name", c.object_name.as_str()),
                ]),
            ),
            ("minReplicas", Yaml::from(min)),
            ("maxReplicas", Yaml::from(max)),
            (
                "metrics",
                seq([map([
                    ("type", Yaml::from("Resource")),
                    (
                        "resource",
                        map([
                            ("name", Yaml::from("cpu")),
                            (
                                "target",
                                map([
                                    ("type", Yaml::from("Utilization")),
                                    ("averageUtilization", Yaml::from(cpu)),
                                ]),
                            ),
                        ]),
                    ),
                ])]),
            ),
        ]),
    );
    Some(y)
}

/// The component's Ingress when `[components.NAME.ingress]` enables one: each host's paths
/// go to the Service's `http` port.
fn ingress(model: &Model, c: &ComponentModel) -> Option<Yaml> {
    let ing = c.ingress.as_ref().filter(|i| i.enabled)?;
    let mut meta = metadata(model, c);
    if !ing.annotations.is_empty() {
        meta.push(
            "annotations",
            map(ing
                .annotations
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))),
        );
    }
    let mut spec = map(Vec::<(String, Yaml)>::new());
    if !ing.class_name.is_empty() {
        spec.push("ingressClassName", ing.class_name.as_str());
    }
    if !ing.tls.is_empty() {
        spec.push(
            "tls",
            seq(ing.tls.iter().map(|t| {
                let mut tls = map([("secretName", Yaml::from(&t.secret_name))]);
                if !t.hosts.is_empty() {
                    tls.push("hosts", seq(t.hosts.iter().map(String::as_str)));
                }
                tls
            })),
        );
    }
    let backend = map([(
        "service",
        map([
            ("name", Yaml::from(&c.object_name)),
            ("port", map([("name", "http")])),
        ]),
    )]);
    spec.push(
        "rules",
        seq(ing.hosts.iter().map(|h| {
            let mut rule = map(Vec::<(String, Yaml)>::new());
            if !h.host.is_empty() {
                rule.push("host", h.host.as_str());
            }
            let paths = seq(h.paths.iter().map(|(path, kind)| {
                map([
                    ("path", Yaml::from(path)),
                    ("pathType", Yaml::from(kind)),
                    ("backend", backend.clone()),
                ])
            }));
            rule.push("http", map([("paths", paths)]));
            rule
        })),
    );
    let mut y = header("networking.k8s.io/v1", "Ingress", meta);
    y.push("spec", spec);
    Some(y)
}

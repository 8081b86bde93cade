//! `slipway plan` and `slipway build` against the real daemon, on small busybox fixtures.
//!
//! Each test copies a fixture from tests/fixtures/build/ into a temporary directory, writes its
//! slipway.toml with an image prefix no other test uses, and removes every image under that
//! prefix at the end.

mod common;

use common::RunRetrying as _;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;
use futures_util::TryStreamExt;
use slipway::builder::{self as build, BuildOptions, CacheState};
use slipway::record::{BuildReport, Outcome};
use slipway::report::{Event, Recorder};

/// The base image every fixture builds on (built by scripts/env/images).
const BUSYBOX: &str = "slipway-test/busybox:1.35";

/// A fixture copied into a temporary directory, with its images removed on drop.
struct Project {
    dir: tempfile::TempDir,
    prefix: String,
}

impl Project {
    async fn new(fixture: &str, docker: &Docker) -> Project {
        assert!(
            docker.inspect_image(BUSYBOX).await.is_ok(),
            "the test base image {BUSYBOX} is missing: run scripts/env/images busybox"
        );
        let dir = tempfile::tempdir().unwrap();
        let src = common::repo().join("tests/fixtures/build").join(fixture);
        copy_dir(&src, dir.path());
        let prefix = common::unique("slipway-test-build");
        let template = std::fs::read_to_string(dir.path().join("slipway.toml.in")).unwrap();
        std::fs::write(
            dir.path().join("slipway.toml"),
            template.replace("@PREFIX@", &prefix),
        )
        .unwrap();
        // A file of its own in every context: the input digests (and so the image labels and
        // IDs) of this test's images differ from every other test's, so no test's clean-up
        // can touch an image another one is using.
        let config = slipway::config::load(&dir.path().join("slipway.toml")).unwrap();
        for c in config.components.values() {
            std::fs::write(config.context_dir(c).join(".test-id"), &prefix).unwrap();
        }
        Project { dir, prefix }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }

    fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.path(rel)).unwrap();
        assert!(text.contains(from), "{rel} has no `{from}`");
        self.write(rel, &text.replace(from, to));
    }

    fn config(&self) -> slipway::config::Config {
        slipway::config::load(&self.path("slipway.toml")).unwrap()
    }

    async fn daemon(&self) -> slipway::docker::Daemon {
        slipway::docker::connect(std::time::Duration::from_secs(5))
            .await
            .unwrap()
    }

    /// Builds through the library; returns the result and the events.
    async fn build(
        &self,
        selection: &[&str],
        opts: BuildOptions,
    ) -> (anyhow::Result<BuildReport>, Vec<Event>) {
        let recorder = Arc::new(Recorder::default());
        let selection: Vec<String> = selection.iter().map(|s| s.to_string()).collect();
        let result = build::run_build(
            recorder.clone(),
            &self.config(),
            &self.daemon().await,
            &selection,
            &opts,
        )
        .await;
        (result, recorder.events())
    }

    async fn plan(&self) -> build::BuildPlan {
        build::plan(&self.config(), &self.daemon().await, &[])
            .await
            .unwrap()
    }

    /// Runs the slipway binary in the project directory.
    fn run(&self, args: &[&str]) -> Output {
        common::slipway()
            .args(args)
            .arg("--progress=plain")
            .current_dir(self.dir.path())
            .env_remove("CI")
            .output()
            .unwrap()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        // Drop runs inside the test's runtime: remove the images from a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(remove_images(&prefix));
        })
        .join();
    }
}

async fn remove_images(prefix: &str) {
    let endpoint = slipway::docker::endpoint();
    let Ok(docker) = slipway::docker::client(&endpoint, slipway::docker::DEFAULT_TIMEOUT) else {
        return;
    };
    let filters = BTreeMap::from([("reference", vec![format!("{prefix}/*")])]);
    let filters: std::collections::HashMap<_, _> = filters
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let Ok(images) = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
    else {
        return;
    };
    // Untag by name, never by ID: another test may hold an identical image (same ID) under
    // its own prefix, and removing the ID would take its tags too.
    for image in images {
        for tag in image.repo_tags.iter().filter(|t| t.starts_with(prefix)) {
            let _ = docker
                .remove_image(
                    tag,
                    Some(RemoveImageOptionsBuilder::default().build()),
                    None,
                )
                .await;
        }
    }
}

/// Every tag under `prefix`.
async fn tags_under(docker: &Docker, prefix: &str) -> Vec<String> {
    let filters =
        std::collections::HashMap::from([("reference".to_string(), vec![format!("{prefix}/*")])]);
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    images.into_iter().flat_map(|i| i.repo_tags).collect()
}

/// No build left a temporary tag behind.
async fn assert_no_temp_tags(docker: &Docker, prefix: &str) {
    let tags = tags_under(docker, prefix).await;
    assert!(
        tags.iter().all(|t| !t.contains(":slipway-build-")),
        "{tags:?}"
    );
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

async fn image_id(docker: &Docker, reference: &str) -> Option<String> {
    docker
        .inspect_image(reference)
        .await
        .ok()
        .and_then(|i| i.id)
}

fn started(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Started { task, .. } => Some(task.clone()),
            _ => None,
        })
        .collect()
}

fn steps(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Step { .. }))
        .count()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn second_run_is_cached_and_asks_the_daemon_to_build_nothing() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;

    // --jobs 1: one build at a time.
    let one_at_a_time = BuildOptions {
        jobs: Some(1),
        ..BuildOptions::default()
    };
    let (first, events) = p.build(&[], one_at_a_time).await;
    let first = first.unwrap();
    let mut names = started(&events);
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    let order: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Started { .. } => Some("start"),
            Event::Finished { .. } => Some("end"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["start", "end", "start", "end"]);
    for (name, r) in &first.components {
        assert_eq!(r.outcome, Outcome::Built, "{name}");
        assert_eq!(r.reason.as_deref(), Some("never built"));
        assert_eq!(r.image, format!("{}/{name}:{}", p.prefix, r.tag));
        assert_eq!(r.tag.len(), 12);
        assert!(r.input_digest.starts_with(&format!("sha256:{}", r.tag)));
        assert!(r.size > 0);
        // Every tag points at the image, and the image carries the labels.
        for t in &r.tags {
            assert_eq!(
                image_id(&docker, t).await.as_deref(),
                Some(r.image_id.as_str())
            );
        }
        assert!(r.tags.contains(&format!("{}/{name}:latest", p.prefix)));
        let labels = docker
            .inspect_image(&r.image_id)
            .await
            .unwrap()
            .config
            .unwrap()
            .labels
            .unwrap();
        assert_eq!(labels["dev.slipway.input-digest"], r.input_digest);
        assert_eq!(labels["dev.slipway.component"], *name);
        assert_eq!(labels["dev.slipway.app"], "two");
        assert!(build::Inputs::from_label(&labels["dev.slipway.inputs"]).is_some());
    }
    // The [base_images] override reached alpha's ARG.
    let plan = p.plan().await;
    let alpha = &plan.components[0];
    assert_eq!(alpha.build_args["RUNTIME_IMAGE"], BUSYBOX);
    assert!(alpha.base_images.contains_key(BUSYBOX));
    // beta's Dockerfile declares no ARG: neither the override nor anything else is passed.
    assert!(plan.components[1].build_args.is_empty());

    let t0 = std::time::Instant::now();
    let (second, events) = p.build(&[], BuildOptions::default()).await;
    let elapsed = t0.elapsed();
    let second = second.unwrap();
    assert!(started(&events).is_empty(), "{events:?}");
    assert_eq!(steps(&events), 0);
    for (name, r) in &second.components {
        assert_eq!(r.outcome, Outcome::Cached, "{name}");
        assert_eq!(r.image_id, first.components[name].image_id);
        assert_eq!(r.reason, None);
    }
    eprintln!("cached run: {elapsed:?}");

    // The record of the last run is where load, manifests and chart look for it.
    let last = slipway::record::read_last(&p.config()).unwrap();
    assert_eq!(last, second);
    let mut tags = tags_under(&docker, &p.prefix).await;
    tags.sort();
    let mut expected: Vec<String> = second
        .components
        .values()
        .flat_map(|r| r.tags.clone())
        .collect();
    expected.sort();
    assert_eq!(tags, expected);
}

#[tokio::test]
async fn editing_one_file_rebuilds_only_its_component() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    let first = p.build(&[], BuildOptions::default()).await.0.unwrap();

    p.write("beta/src/one.txt", "beta one, edited\n");
    let plan = p.plan().await;
    let by_name: BTreeMap<_, _> = plan
        .components
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    assert!(by_name["alpha"].is_cached());
    match &by_name["beta"].cache {
        CacheState::Build { reason } => assert!(reason.starts_with("context changed"), "{reason}"),
        other => panic!("beta should build: {other:?}"),
    }

    let (second, events) = p.build(&[], BuildOptions::default()).await;
    let second = second.unwrap();
    assert_eq!(started(&events), ["beta"]);
    assert_eq!(second.components["alpha"].outcome, Outcome::Cached);
    assert_eq!(
        second.components["alpha"].image_id,
        first.components["alpha"].image_id
    );
    let beta = &second.components["beta"];
    assert_eq!(beta.outcome, Outcome::Built);
    assert!(beta
        .reason
        .as_deref()
        .unwrap()
        .starts_with("context changed"));
    assert_ne!(beta.image_id, first.components["beta"].image_id);
    assert_ne!(beta.tag, first.components["beta"].tag);
    // latest moved to the new image; the old digest tag still names the old one.
    let latest = format!("{}/beta:latest", p.prefix);
    assert_eq!(image_id(&docker, &latest).await.unwrap(), beta.image_id);
    assert_eq!(
        image_id(&docker, &first.components["beta"].image)
            .await
            .unwrap(),
        first.components["beta"].image_id
    );

    // Going back to the old content is cached again, and moves latest back.
    p.write("beta/src/one.txt", "beta one\n");
    let third = p.build(&["beta"], BuildOptions::default()).await.0.unwrap();
    assert_eq!(third.components["beta"].outcome, Outcome::Cached);
    assert_eq!(
        image_id(&docker, &latest).await.unwrap(),
        first.components["beta"].image_id
    );
}

#[tokio::test]
async fn plan_names_the_input_that_changed() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    let out = p.run(&["plan"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("COMPONENT"), "{stdout}");
    assert_eq!(stdout.matches("build: never built").count(), 2, "{stdout}");

    let out = p.run(&["build"]);
    assert!(out.status.success(), "{}", text(&out));

    p.edit(
        "slipway.toml",
        "GREETING = \"hello\"",
        "GREETING = \"bonjour\"",
    );
    p.edit(
        "dockerfiles/beta.Dockerfile",
        "RUN ls -R /app",
        "RUN ls -la /app",
    );
    let out = p.run(&["plan"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("alpha").ends_with("build: build arg GREETING changed"),
        "{stdout}"
    );
    // The Dockerfile is outside beta's context but packed with it: both show.
    assert!(
        line("beta").contains("build: Dockerfile changed"),
        "{stdout}"
    );

    let out = p.run(&["plan", "--json", "alpha"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &json["components"][0];
    assert_eq!(c["name"], "alpha");
    assert_eq!(c["cache"]["state"], "build");
    assert_eq!(c["cache"]["reason"], "build arg GREETING changed");
    assert_eq!(c["build_args"]["GREETING"], "bonjour");
    assert_eq!(json["components"].as_array().unwrap().len(), 1);

    let out = p.run(&["plan", "gamma"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no component `gamma`"),
        "{}",
        text(&out)
    );
}

/// The events of a `--progress json` run: every line of stdout parses as JSON and is one of
/// the events docs/progress-events.schema.json describes, with the fields it requires and no
/// field it does not know; the first is `run` and the last `summary`.
fn json_events(out: &Output) -> Vec<serde_json::Value> {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("docs/progress-events.schema.json")).unwrap(),
    )
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for e in &events {
        let kind = &e["event"];
        let branch = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["properties"]["event"]["const"] == *kind)
            .unwrap_or_else(|| panic!("an event the schema does not know: {e}"));
        for field in branch["required"].as_array().unwrap() {
            assert!(
                e.get(field.as_str().unwrap()).is_some(),
                "{field} missing: {e}"
            );
        }
        for (field, value) in e.as_object().unwrap() {
            let spec = &branch["properties"][field];
            assert!(!spec.is_null(), "field {field} not in the schema: {e}");
            if let Some(allowed) = spec["enum"].as_array() {
                assert!(
                    allowed.contains(value),
                    "{field} = {value} not in the schema: {e}"
                );
            }
        }
    }
    assert_eq!(
        events.first().map(|e| &e["event"]),
        Some(&"run".into()),
        "{stdout}"
    );
    assert_eq!(events.first().unwrap()["schema_version"], 1);
    assert_eq!(
        events.last().map(|e| &e["event"]),
        Some(&"summary".into()),
        "{stdout}"
    );
    events
}

/// The events of `kind` (`finished`, `failed`, ...).
fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[tokio::test]
async fn json_progress_is_all_of_stdout_and_ends_with_a_summary() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    let json = |args: &[&str]| {
        common::slipway()
            .args(args)
            .arg("--progress=json")
            .current_dir(p.dir.path())
            .output()
            .unwrap()
    };

    // First build: both built, because they never were; stderr says nothing.
    let out = json(&["build"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let events = json_events(&out);
    let finished = of_kind(&events, "finished");
    assert_eq!(finished.len(), 2, "{events:?}");
    for f in &finished {
        assert_eq!(f["outcome"], "built", "{f}");
        assert_eq!(f["reason"], "never_built", "{f}");
    }
    let summary = events.last().unwrap();
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["command"], "build");
    let record = slipway::record::read_last(&p.config()).unwrap();
    assert_eq!(
        summary["result"]["components"]["alpha"]["image"],
        record.components["alpha"].image.as_str()
    );

    // Again: both cached. An edit: built, saying what changed.
    let events = json_events(&json(&["build"]));
    assert!(of_kind(&events, "finished")
        .iter()
        .all(|f| f["outcome"] == "cached"));
    p.write("alpha/message.txt", "alpha says hello again\n");
    // `plan` names the file that changed.
    let out = p.run(&["plan"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("build: context changed") && plan.contains("): message.txt"),
        "{plan}"
    );
    let events = json_events(&json(&["build", "alpha"]));
    let f = of_kind(&events, "finished")[0];
    assert_eq!(
        f["changed_files"],
        serde_json::json!(["message.txt"]),
        "{f}"
    );
    assert_eq!(
        (&f["outcome"], &f["reason"]),
        (&"built".into(), &"context_changed".into())
    );
    assert!(
        f["detail"].as_str().unwrap().starts_with("context changed"),
        "{f}"
    );

    // Without JSON, stdout is the image references, one per line (`$(slipway build -q alpha)`).
    let out = common::slipway()
        .args(["build", "-q", "alpha"])
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let record = slipway::record::read_last(&p.config()).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", record.components["alpha"].image)
    );

    // A failing build: a `failed` event naming the step, an `error` event with its hint, a
    // failed summary, exit 1; still nothing but events on stdout.
    p.edit(
        "dockerfiles/beta.Dockerfile",
        "RUN ls -R /app",
        "RUN echo the cause of it all >&2; exit 3",
    );
    let out = json(&["build"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events = json_events(&out);
    let failed = of_kind(&events, "failed");
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["task"], "beta");
    assert!(
        failed[0]["step"]
            .as_str()
            .unwrap()
            .contains("RUN echo the cause"),
        "{}",
        failed[0]
    );
    assert_eq!(failed[0]["error"], "exit code: 3");
    let error = of_kind(&events, "error");
    assert_eq!(error.len(), 1, "{events:?}");
    assert!(
        error[0]["message"]
            .as_str()
            .unwrap()
            .ends_with("failed: beta"),
        "{}",
        error[0]
    );
    assert!(
        error[0]["causes"].to_string().contains("exit code: 3"),
        "{}",
        error[0]
    );
    assert_eq!(error[0]["exit_code"], 1);
    let summary = events.last().unwrap();
    assert_eq!(
        (&summary["status"], &summary["exit_code"]),
        (&"failed".into(), &1.into())
    );

    // A usage error is an event too (exit 2).
    let out = json(&["plan", "gamma"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let events = json_events(&out);
    let error = of_kind(&events, "error");
    assert!(
        error[0]["message"]
            .as_str()
            .unwrap()
            .contains("no component `gamma`"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["exit_code"], 2);
}

#[tokio::test]
async fn a_failing_run_moves_no_tag_and_shows_the_step_and_log_tail() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    let out = p.run(&["build"]);
    assert!(out.status.success(), "{}", text(&out));
    let latest = |name: &str| format!("{}/{name}:latest", p.prefix);
    let alpha_before = image_id(&docker, &latest("alpha")).await.unwrap();
    let beta_before = image_id(&docker, &latest("beta")).await.unwrap();

    // alpha changes and builds fine; beta's RUN fails after printing 30 lines.
    p.write("alpha/message.txt", "alpha says hello\n");
    p.edit(
        "dockerfiles/beta.Dockerfile",
        "RUN ls -R /app",
        "RUN for i in $(seq 1 30); do echo \"output line $i\"; done; exit 3",
    );
    let plan = p.plan().await;
    let beta_tag = plan.components[1].image.clone();
    let metadata = p.path("out/metadata.json");
    let out = p.run(&["build", "--metadata-file", metadata.to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    // The component, the step and its command, and the last 20 lines of its log.
    assert!(all.contains("[beta] FAILED"), "{all}");
    assert!(all.contains("RUN for i in $(seq 1 30)"), "{all}");
    assert!(all.contains("exit code: 3"), "{all}");
    assert!(
        all.contains("|   output line 30") || all.contains("| output line 30"),
        "{all}"
    );
    assert!(all.contains("output line 11"), "{all}");
    let tail_start = all.find("[beta] FAILED").unwrap();
    assert!(!all[tail_start..].contains("output line 10\n"), "{all}");
    assert!(
        all.contains("error: 1 of 2 component builds failed: beta"),
        "{all}"
    );

    // beta's tags stay where they were; the new digest tag does not exist.
    assert_eq!(
        image_id(&docker, &latest("beta")).await.unwrap(),
        beta_before
    );
    assert_eq!(image_id(&docker, &beta_tag).await, None);
    // alpha finished and moved.
    let alpha_after = image_id(&docker, &latest("alpha")).await.unwrap();
    assert_ne!(alpha_after, alpha_before);

    // The metadata file says what happened to each.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metadata).unwrap()).unwrap();
    assert_eq!(meta["components"]["alpha"]["outcome"], "built");
    assert_eq!(
        meta["components"]["alpha"]["image_id"],
        alpha_after.as_str()
    );
    assert_eq!(meta["components"]["beta"]["outcome"], "failed");
    assert_eq!(meta["components"]["beta"]["image"], beta_tag.as_str());
    assert_eq!(meta["components"]["beta"]["image_id"], "");
    assert!(meta["components"]["beta"]["reason"]
        .as_str()
        .unwrap()
        .contains("exit code: 3"));
    // The last-build record still names beta's previous image.
    let last = slipway::record::read_last(&p.config()).unwrap();
    assert_eq!(last.components["beta"].image_id, beta_before);
    assert_eq!(last.components["alpha"].image_id, alpha_after);
    assert_no_temp_tags(&docker, &p.prefix).await;
}

#[tokio::test]
async fn a_failed_build_shows_its_cause_and_keeps_its_whole_log() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    // The cause goes to stderr first; 30 lines of stdout follow it, more than the excerpt's
    // 20: the cause must still be in the excerpt.
    let command = format!(
        "RUN echo 'error: the cause, on stderr' >&2; for i in $(seq 1 30); do echo \"compiling module $i\"; done; echo {}; exit 1",
        p.prefix
    );
    p.edit("dockerfiles/beta.Dockerfile", "RUN ls -R /app", &command);
    let out = p.run(&["build"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let failure = &all[all.find("[beta] FAILED").expect(&all)..];
    assert!(failure.contains("| error: the cause, on stderr"), "{all}");
    assert!(failure.contains("| compiling module 30"), "{all}");
    // The failing command once, from the failure on (the error chain names the step only).
    assert_eq!(failure.matches("seq 1 30").count(), 1, "{all}");
    assert!(
        failure.contains("failed at [3/3]") || failure.contains("FAILED at"),
        "{all}"
    );
    // The whole log, its path printed.
    assert!(
        failure.contains("full log: .slipway/logs/beta.log"),
        "{all}"
    );
    assert!(all.contains("hint: the whole build log of `beta` is in .slipway/logs/beta.log"));
    let log = std::fs::read_to_string(p.path(".slipway/logs/beta.log")).unwrap();
    for line in [
        "error: the cause, on stderr",
        "compiling module 1",
        "compiling module 30",
    ] {
        assert!(
            log.lines().any(|l| l == line),
            "{line} not in the log:\n{log}"
        );
    }
    assert!(log.contains("exit code: 1"), "{log}");
    // Every component's log is kept, and nothing half-written is left beside them.
    let alpha = std::fs::read_to_string(p.path(".slipway/logs/alpha.log")).unwrap();
    assert!(alpha.contains("RUN echo"), "{alpha}");
    let mut names: Vec<String> = std::fs::read_dir(p.path(".slipway/logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha.log", "beta.log"]);
}

#[tokio::test]
async fn a_dockerfile_typo_names_the_file_and_line_with_a_guess() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    p.edit(
        "dockerfiles/beta.Dockerfile",
        "RUN ls -R /app",
        "RUNN ls -R /app",
    );
    let out = p.run(&["build", "beta"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("dockerfiles/beta.Dockerfile:3: unknown instruction RUNN (did you mean RUN?)"),
        "{all}"
    );
    assert!(
        all.contains("hint: fix line 3 of dockerfiles/beta.Dockerfile"),
        "{all}"
    );
}

#[tokio::test]
async fn a_secret_a_step_prints_never_reaches_the_output_or_the_log() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("secret", &docker).await;
    let marker = format!("slipway-secret-marker-{}", common::unique("x"));
    // A careless step that prints the secret, then fails.
    p.edit(
        "app/Dockerfile",
        "wc -c < /run/secrets/SLIPWAY_TEST_TOKEN > /token-length",
        "cat /run/secrets/SLIPWAY_TEST_TOKEN; echo; echo printed; exit 1",
    );
    let out = common::slipway()
        .args(["build", "--no-cache", "--progress=plain", "-v"])
        .current_dir(p.dir.path())
        .env("SLIPWAY_TEST_TOKEN", &marker)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("| ***"), "{all}");
    assert!(!all.contains(&marker), "{all}");
    let log = std::fs::read_to_string(p.path(".slipway/logs/app.log")).unwrap();
    assert!(log.contains("printed") && log.contains("***"), "{log}");
    assert!(!log.contains(&marker), "{log}");
}

#[tokio::test]
async fn fail_fast_stops_the_other_builds() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    p.edit(
        "alpha/Dockerfile",
        "RUN echo",
        &format!("RUN echo {}; sleep 300\nRUN echo", p.prefix),
    );
    p.edit(
        "dockerfiles/beta.Dockerfile",
        "RUN ls -R /app",
        "RUN exit 7",
    );
    let t0 = std::time::Instant::now();
    let out = p.run(&["build", "--fail-fast"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    // Far less than the 300 s alpha's step would take (generous: the machine may be busy).
    assert!(t0.elapsed() < std::time::Duration::from_secs(120), "{all}");
    assert!(all.contains("--fail-fast"), "{all}");
    assert_eq!(
        image_id(&docker, &format!("{}/alpha:latest", p.prefix)).await,
        None
    );
}

#[tokio::test]
async fn ctrl_c_stops_every_build_and_moves_no_tag() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    let out = p.run(&["build"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = image_id(&docker, &format!("{}/beta:latest", p.prefix))
        .await
        .unwrap();

    p.edit(
        "dockerfiles/beta.Dockerfile",
        "RUN ls -R /app",
        // Unique, so that no earlier run's build cache answers for the step.
        &format!("RUN echo sleeping {}; sleep 300", p.prefix),
    );
    let mut child = common::slipway()
        .args(["build", "--progress=plain"])
        .current_dir(p.dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sleeping step runs.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !seen.iter().any(|l: &String| l.contains("  sleeping ")) {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("the build never reached the sleep: {seen:?}"),
        }
    }
    let t0 = std::time::Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    // The rest of its stderr, up to the end (the reader thread ends at EOF, dropping `tx`).
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Ok(l) = rx.recv_timeout(end.saturating_duration_since(std::time::Instant::now())) {
        seen.push(l);
    }
    assert!(seen.iter().any(|l| l.contains("interrupted")), "{seen:?}");
    assert_eq!(
        image_id(&docker, &format!("{}/beta:latest", p.prefix))
            .await
            .unwrap(),
        before
    );
    let plan = p.plan().await;
    assert_eq!(image_id(&docker, &plan.components[1].image).await, None);
    assert_no_temp_tags(&docker, &p.prefix).await;
}

#[tokio::test]
async fn a_missing_base_image_is_named_with_the_fix() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    p.edit(
        "slipway.toml",
        "runtime = \"slipway-test/busybox:1.35\"",
        "runtime = \"slipway-test/no-such-image:0\"",
    );
    // Offline: nothing is pulled; the error names the image, the pull and the config key.
    let out = p.run(&["build", "--no-pull"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("component `alpha`: base image `slipway-test/no-such-image:0` is not on the Docker daemon"),
        "{all}"
    );
    assert!(
        all.contains("hint:")
            && all.contains("docker pull slipway-test/no-such-image:0")
            && all.contains("runtime = \"IMAGE\""),
        "{all}"
    );
    // By default slipway pulls it; a registry that does not have it is named.
    let out = p.run(&["build"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("pulling it failed"), "{all}");
    // The hint follows the daemon's words (offline here: it cannot reach the registry; with a
    // network Docker Hub lacks the name), and names the config key as the offline one does.
    assert!(
        all.contains("could not reach docker.io") || all.contains("check the name and tag"),
        "{all}"
    );
    assert!(all.contains("runtime = \"IMAGE\""), "{all}");
}

#[tokio::test]
async fn the_legacy_builder_builds_where_buildkit_is_missing() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("two", &docker).await;
    // Unique content, so that the legacy builder's cache does not answer the RUN step.
    let message = format!("alpha says {}", p.prefix);
    p.write("alpha/message.txt", &format!("{message}\n"));
    // SLIPWAY_BUILDER=legacy makes slipway act as on a daemon without BuildKit.
    let out = common::slipway()
        .args(["build", "alpha", "--progress=json"])
        .current_dir(p.dir.path())
        .env("SLIPWAY_BUILDER", "legacy")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let events = json_events(&out);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "warn"
                && e["message"].as_str().unwrap().contains("legacy builder"))
    );
    assert!(events.iter().any(|e| e["event"] == "step"
        && e["step"]
            .as_str()
            .unwrap()
            .contains("RUN echo \"$GREETING\"")));
    assert!(events
        .iter()
        .any(|e| e["event"] == "log" && e["line"] == message.as_str()));
    let last = slipway::record::read_last(&p.config()).unwrap();
    assert_eq!(last.components["alpha"].outcome, Outcome::Built);
    assert_eq!(last.components.len(), 1);
    let id = image_id(&docker, &format!("{}/alpha:latest", p.prefix)).await;
    assert_eq!(
        id.as_deref(),
        Some(last.components["alpha"].image_id.as_str())
    );
}

#[tokio::test]
async fn a_build_secret_reaches_the_run_step_and_nothing_else() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = Project::new("secret", &docker).await;
    let marker = format!("slipway-secret-marker-{}", common::unique("x"));

    // Without the variable the build does not start.
    let out = p.run(&["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("SLIPWAY_TEST_TOKEN"));

    let metadata = p.path("meta.json");
    let out = common::slipway()
        // --no-cache: BuildKit leaves secrets out of its cache key, so a cached RUN step
        // from an earlier run would prove nothing about this one.
        .args([
            "build",
            "--no-cache",
            "--progress=plain",
            "-v",
            "--metadata-file",
        ])
        .arg(&metadata)
        .current_dir(p.dir.path())
        .env("SLIPWAY_TEST_TOKEN", &marker)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(&marker));
    let meta = std::fs::read_to_string(&metadata).unwrap();
    assert!(!meta.contains(&marker));
    let last = std::fs::read_to_string(p.path(".slipway/last-build.json")).unwrap();
    assert!(!last.contains(&marker));
    let report: BuildReport = serde_json::from_str(&meta).unwrap();
    let image = &report.components["app"];

    // The image: config, history and every layer.
    let inspect = docker.inspect_image(&image.image_id).await.unwrap();
    assert!(!serde_json::to_string(&inspect).unwrap().contains(&marker));
    let history = docker.image_history(&image.image_id).await.unwrap();
    assert!(!serde_json::to_string(&history).unwrap().contains(&marker));
    let token_length = scan_image(&docker, &image.image_id, &marker).await;
    assert_eq!(
        token_length.as_deref(),
        Some(marker.len().to_string().as_str()),
        "the RUN step did not see the secret"
    );
    assert_no_temp_tags(&docker, &p.prefix).await;

    // A second run is cached without the secret's value mattering.
    let out = common::slipway()
        .args(["build", "--progress=plain"])
        .current_dir(p.dir.path())
        .env("SLIPWAY_TEST_TOKEN", "another value")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("[app] cached"), "{}", text(&out));

    // From a file named by SLIPWAY_TEST_TOKEN_FILE when the variable itself is unset.
    let file_marker = format!("{marker}-from-a-file");
    let secret_file = p.path("token.txt");
    std::fs::write(&secret_file, &file_marker).unwrap();
    let out = common::slipway()
        .args(["build", "--no-cache", "--progress=plain", "-v"])
        .current_dir(p.dir.path())
        .env_remove("SLIPWAY_TEST_TOKEN")
        .env("SLIPWAY_TEST_TOKEN_FILE", &secret_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(&file_marker));
    let report = slipway::record::read_last(&p.config()).unwrap();
    let token_length = scan_image(&docker, &report.components["app"].image_id, &file_marker).await;
    assert_eq!(token_length, Some(file_marker.len().to_string()));
}

/// Exports an image and checks that `marker` is in none of its files (config, manifest,
/// layers); returns the content of `/token-length` from its layers.
async fn scan_image(docker: &Docker, image_id: &str, marker: &str) -> Option<String> {
    let saved: Vec<u8> = docker
        .export_image(image_id)
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
        .unwrap();
    let mut token_length = None;
    let mut archive = tar::Archive::new(saved.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        assert!(
            !data.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "the secret is in {path}"
        );
        // Layers are tars: look inside for the proof the secret was mounted.
        if path.ends_with("layer.tar") {
            let mut layer = tar::Archive::new(data.as_slice());
            for f in layer.entries().unwrap() {
                let mut f = f.unwrap();
                if f.path().unwrap().to_string_lossy() == "token-length" {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
                    token_length = Some(s.trim().to_string());
                }
            }
        }
    }
    token_length
}

/// A stand-in for a daemon that goes away: a Unix socket that forwards to the real daemon
/// until `cut` is notified, then drops every connection and stops answering.
async fn start_cuttable_proxy(dir: &Path, target: &str) -> (String, Arc<tokio::sync::Notify>) {
    let path = dir.join("proxy.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let cut = Arc::new(tokio::sync::Notify::new());
    let target = target.to_string();
    let cut2 = cut.clone();
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { break };
                    let target = target.clone();
                    conns.spawn(async move {
                        let Ok(mut server) = tokio::net::UnixStream::connect(&target).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
                _ = cut2.notified() => {
                    conns.abort_all();
                    break;
                }
            }
        }
        // The listener is dropped here: new connections are refused.
    });
    (format!("unix://{}", path.display()), cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_disappears_mid_build_is_named_and_the_next_run_succeeds() {
    use tokio::io::AsyncBufReadExt;

    let Some(docker) = common::daemon().await else {
        return;
    };
    let endpoint = slipway::docker::endpoint();
    let Some(socket) = endpoint.host.strip_prefix("unix://") else {
        assert!(
            !common::in_ci(),
            "CI=true and the daemon is not on a Unix socket ({}): this test needs one",
            endpoint.host
        );
        eprintln!(
            "SKIPPED: the daemon is not on a Unix socket ({})",
            endpoint.host
        );
        return;
    };
    let p = Project::new("two", &docker).await;
    p.edit(
        "dockerfiles/beta.Dockerfile",
        "RUN ls -R /app",
        // Unique, so that no earlier run's build cache answers for the step.
        &format!("RUN echo sleeping {}; sleep 3", p.prefix),
    );
    let (proxy, cut) = start_cuttable_proxy(p.dir.path(), socket).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["build", "beta", "--progress=plain"])
        .current_dir(p.dir.path())
        .env("DOCKER_HOST", &proxy)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line.contains("  sleeping ");
            seen.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        waited,
        Ok(true),
        "the build never reached the sleep: {seen:?}"
    );
    cut.notify_one();
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    let status = child.wait().await.unwrap();
    let all = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!(
            "lost the Docker daemon at {proxy} while building `beta`"
        )),
        "{all}"
    );
    assert!(all.contains("RUN echo sleeping"), "{all}");
    assert!(all.contains("hint:"), "{all}");
    assert_eq!(
        image_id(&docker, &format!("{}/beta:latest", p.prefix)).await,
        None
    );

    // The daemon is "back": the next run builds and tags.
    let out = p.run(&["build", "beta"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(image_id(&docker, &format!("{}/beta:latest", p.prefix))
        .await
        .is_some());
}

/// Runs the slipway binary in the project with its own cache directory and `env`.
fn run_with(p: &Project, cache: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut c = common::slipway();
    c.args(args)
        .arg("--progress=plain")
        .current_dir(p.dir.path())
        .env_remove("CI")
        .env("SLIPWAY_CACHE_DIR", cache);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    common::ok(out, &format!("slipway {}", args.join(" "))) + &err
}

/// The `normalised ...` line of a build's output.
fn normalised(out: &str) -> &str {
    out.lines()
        .find(|l| l.contains("normalised "))
        .unwrap_or_else(|| panic!("no normalised line in:\n{out}"))
}

/// A project whose `alpha` has a dependency layer a RUN step writes (its times are rewritten)
/// under `extra` and the app's layer, for the partial export, which needs a daemon on a local
/// socket (it pushes to 127.0.0.1). The test's prefix in every step: no layer comes from another
/// run's build cache (whose chain of layers below would differ).
async fn partial_project(docker: &Docker, extra: &str) -> Project {
    let host = slipway::docker::endpoint().host;
    assert!(
        host.starts_with("unix://"),
        "this test needs the local daemon on its unix socket, not {host}"
    );
    let p = Project::new("two", docker).await;
    p.write(
        "alpha/Dockerfile",
        &format!(
            "ARG RUNTIME_IMAGE=slipway-test/not-overridden:0\n\
             FROM ${{RUNTIME_IMAGE}} AS production\n\
             RUN mkdir -p /opt/deps && seq 1 300000 > /opt/deps/numbers && echo {} > /opt/deps/a.txt\n\
             {extra}\
             COPY app/ /app/\n\
             CMD [\"cat\", \"/app/main.txt\"]\n",
            p.prefix
        ),
    );
    p
}

#[tokio::test]
async fn after_a_small_change_normalising_takes_only_the_new_layer_from_the_daemon_and_gives_the_same_image(
) {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = partial_project(&docker, "COPY message.txt /message.txt\n").await;
    std::fs::create_dir_all(p.path("alpha/app")).unwrap();
    p.write("alpha/app/main.txt", "v1\n");
    p.write("alpha/app/other.txt", &p.prefix);
    let cache = tempfile::tempdir().unwrap();
    let build = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["build", "alpha"];
        args.extend_from_slice(extra);
        run_with(&p, cache.path(), env, &args)
    };

    let first = build(&[], &[]);
    assert!(normalised(&first).contains("whole image"), "{first}");
    // The second build pushes what the daemon never pushed before (the dependency layer); from
    // then on only the layers a change made leave the daemon.
    p.write("alpha/app/main.txt", "v2\n");
    let second = build(&[], &[]);
    assert!(normalised(&second).contains("; pushed "), "{second}");
    p.write("alpha/app/main.txt", "v3\n");
    p.write(
        "alpha/app/new.txt",
        "a file the earlier builds did not have\n",
    );
    let since = daemon_now(&docker).await;
    let third = build(&[], &[]);
    assert!(
        normalised(&third).contains("; pushed 1 of "),
        "only the changed COPY layer: {}\n{}\n{third}",
        normalised(&first),
        normalised(&second),
    );
    let report = |out: &str| -> BuildReport {
        let path = p.path(".slipway/last-build.json");
        serde_json::from_slice(&std::fs::read(path).unwrap())
            .unwrap_or_else(|e| panic!("last-build.json: {e}\n{out}"))
    };
    let fast = report(&third).components["alpha"].image_id.clone();
    let image = report(&third).components["alpha"].image.clone();
    // Its SBOM's OS files are the second image's (the new layer has none of them): no
    // container is made from it to read them again.
    let created = std::process::Command::new("docker")
        .args([
            "events",
            "--since",
            &since,
            "--until",
            &daemon_now(&docker).await,
        ])
        .args(["--filter", "type=container", "--filter", "event=create"])
        .args(["--filter", &format!("image={fast}")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&created.stdout).trim(),
        "",
        "containers made during the third build"
    );
    assert!(p
        .path(".slipway/attestations/alpha/sbom.cdx.json")
        .is_file());

    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "cat /app/main.txt /app/new.txt /message.txt; wc -l < /opt/deps/numbers",
        ])
        .output_retrying()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.starts_with("v3\na file the earlier builds did not have\n")
            && shown.ends_with("300000\n"),
        "{shown}"
    );

    // Another SOURCE_DATE_EPOCH over the same built layers: what was normalised with the old
    // one is not reused (its normal forms hold the old time), so the image is the whole
    // export's with the new one.
    let sde = [("SOURCE_DATE_EPOCH", "1600000000")];
    let other = build(&sde, &[]);
    let partial_id = report(&other).components["alpha"].image_id.clone();
    let whole_cache = tempfile::tempdir().unwrap();
    let sde_whole = [
        ("SOURCE_DATE_EPOCH", "1600000000"),
        ("SLIPWAY_EXPORT", "whole"),
    ];
    let whole = run_with(
        &p,
        whole_cache.path(),
        &sde_whole,
        &["build", "alpha", "--no-cache"],
    );
    assert_eq!(
        partial_id,
        report(&whole).components["alpha"].image_id,
        "a new SOURCE_DATE_EPOCH: {}\n{}",
        normalised(&other),
        normalised(&whole)
    );

    // The whole export of the same build, with nothing remembered, gives the same image.
    let other_cache = tempfile::tempdir().unwrap();
    let whole = run_with(
        &p,
        other_cache.path(),
        &[("SLIPWAY_EXPORT", "whole")],
        &["build", "alpha", "--no-cache"],
    );
    assert!(normalised(&whole).contains("whole image"), "{whole}");
    assert_eq!(
        report(&whole).components["alpha"].image_id,
        fast,
        "the partial export's normal form is the whole export's"
    );
}

/// The newest record's image removed (`docker image prune`, `slipway prune`) and slipway's
/// memory of loaded images without the others (it keeps the newest few): normalising starts
/// from an older record whose image the daemon still has, instead of exporting everything.
#[tokio::test]
async fn normalising_starts_from_an_older_record_when_the_newest_ones_image_is_gone() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let p = partial_project(&docker, "").await;
    std::fs::create_dir_all(p.path("alpha/app")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let build = |version: &str| {
        p.write("alpha/app/main.txt", &format!("{version}\n"));
        let out = run_with(&p, cache.path(), &[], &["build", "alpha"]);
        let path = p.path(".slipway/last-build.json");
        let report: BuildReport = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        (out, report.components["alpha"].image_id.clone())
    };
    // Until the daemon has pushed the dependency layer once, the export is whole.
    build("v1");
    let (second, kept) = build("v2");
    assert!(normalised(&second).contains("; pushed "), "{second}");
    let (third, gone) = build("v3");
    assert!(normalised(&third).contains("; pushed 1 of "), "{third}");
    let rmi = std::process::Command::new("docker")
        .args(["rmi", "-f", &gone])
        .output()
        .unwrap();
    assert!(
        rmi.status.success(),
        "{}",
        String::from_utf8_lossy(&rmi.stderr)
    );
    std::fs::remove_file(cache.path().join("loaded-layers.json")).unwrap();
    assert!(
        docker.inspect_image(&kept).await.is_ok(),
        "v2's image is gone"
    );

    let (fourth, id) = build("v4");
    assert!(
        normalised(&fourth).contains("; pushed 1 of "),
        "the record of v3 (image removed) was the only one tried: {}",
        normalised(&fourth)
    );
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            &id,
            "sh",
            "-c",
            "cat /app/main.txt; wc -l < /opt/deps/numbers",
        ])
        .output_retrying()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v4\n300000\n");
}

/// The daemon's clock (RFC 3339), as `docker events --since/--until` take it.
async fn daemon_now(docker: &Docker) -> String {
    docker.info().await.unwrap().system_time.unwrap()
}

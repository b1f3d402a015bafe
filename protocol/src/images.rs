//! Which image a run's sandbox is made from.
//!
//! In order: a per-instance override from the sweep, the dataset's own `image` field (SWE-bench
//! v5 datasets carry one), else the official naming scheme
//! `[registry/]<namespace>/sweb.eval.x86_64.<id>:<tag>`, where `<id>` is the instance id with
//! `__` replaced by `_1776_` (Docker names may not contain a double underscore there).

use crate::{Instance, SandboxSettings};

pub fn image_for(instance: &Instance, settings: &SandboxSettings) -> String {
    image_name(&instance.instance_id, instance.image.as_deref(), settings)
}

/// [`image_for`] from the two fields it reads (for callers without the whole record).
pub fn image_name(instance_id: &str, dataset_image: Option<&str>, settings: &SandboxSettings) -> String {
    if let Some(image) = settings.image_overrides.get(instance_id) {
        return image.clone();
    }
    if let Some(image) = dataset_image.filter(|i| !i.trim().is_empty()) {
        return image.to_string();
    }
    let id = instance_id.replace("__", "_1776_").to_lowercase();
    let name = format!("{}/sweb.eval.x86_64.{id}:{}", settings.image_namespace, settings.image_tag);
    match settings.image_registry.as_deref().map(|r| r.trim_end_matches('/')) {
        Some(registry) if !registry.is_empty() => format!("{registry}/{name}"),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, image: Option<&str>) -> Instance {
        serde_json::from_value(serde_json::json!({
            "instance_id": id, "repo": "django/django", "base_commit": "abc1234", "patch": "",
            "test_patch": "", "problem_statement": "", "version": "3.0",
            "FAIL_TO_PASS": ["t"], "PASS_TO_PASS": [], "image": image,
        }))
        .unwrap()
    }

    #[test]
    fn official_name_by_default() {
        let s = SandboxSettings::default();
        assert_eq!(
            image_for(&instance("django__django-11099", None), &s),
            "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
        );
    }

    #[test]
    fn registry_namespace_and_tag_are_configurable() {
        let s = SandboxSettings {
            image_registry: Some("registry.local:5000/".into()),
            image_namespace: "mirror".into(),
            image_tag: "v2".into(),
            ..Default::default()
        };
        assert_eq!(
            image_for(&instance("sympy__sympy-20590", None), &s),
            "registry.local:5000/mirror/sweb.eval.x86_64.sympy_1776_sympy-20590:v2"
        );
    }

    #[test]
    fn dataset_image_then_override_win() {
        let mut s = SandboxSettings::default();
        let inst = instance("psf__requests-1142", Some("ghcr.io/x/requests:1142"));
        assert_eq!(image_for(&inst, &s), "ghcr.io/x/requests:1142");
        s.image_overrides.insert("psf__requests-1142".into(), "local/requests:dev".into());
        assert_eq!(image_for(&inst, &s), "local/requests:dev");
    }

    #[test]
    fn uppercase_ids_make_valid_image_names() {
        // Docker repository names are lower case.
        let s = SandboxSettings::default();
        assert_eq!(
            image_for(&instance("pydata__xarray-4094", None), &s),
            "swebench/sweb.eval.x86_64.pydata_1776_xarray-4094:latest"
        );
        assert_eq!(
            image_for(&instance("Owner__Repo-1", None), &s),
            "swebench/sweb.eval.x86_64.owner_1776_repo-1:latest"
        );
    }
}

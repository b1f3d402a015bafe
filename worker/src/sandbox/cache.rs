//! The instance-image cache: keeps the images a worker has used, up to a byte budget, removing
//! the least recently used ones that nothing is using when the budget is exceeded. The official
//! harness deletes instance images after each run; keeping them saves a pull (minutes, gigabytes)
//! whenever a worker grades the same instance again, and [`ImageCache::held`] tells the
//! coordinator which instances a worker can start at once.
//!
//! Decisions:
//!
//! - **Which images it manages.** An image (one image ID) is managed when every one of its tags
//!   is: a tag whose repository contains the managed pattern (`sweb.eval.` by default: the
//!   SWE-bench instance images, whoever pulled them, so that a restarted worker adopts what it
//!   had), or a reference acquired through this cache since the worker started. An untagged image
//!   is managed when one of its repository digests matches the pattern (an instance image whose
//!   tag moved to a newer pull). An image with any other tag (a base image that also carries an
//!   instance-like name, say) is not managed. An image other local images are built on (its layers
//!   are a strict prefix of another image's) is never removed, even when managed: removing its tag
//!   frees nothing and would make the next build from it pull.
//! - **Recency.** Kept in memory: every [`ImageCache::acquire`] and every [`ImageGuard`] drop marks
//!   the image used (a logical clock, so ties cannot happen). Images not used since the worker
//!   started rank below every image used since, ordered among themselves by when they arrived:
//!   the engine's `LastTagTime` (set when the image was tagged or built here), else its `Created`
//!   (its build time; engines leave `LastTagTime` unset for pulled images). Nothing is written
//!   to disk: the engine's own timestamps are the only record that survives a restart.
//! - **Sizes.** An image's `Size` counts every layer, and instance images of one repository and
//!   version share gigabytes of environment layers, so summing sizes would overcount many times
//!   over; `docker system df`'s per-image unique size undercounts the same way (and bollard
//!   0.21 cannot read the engine-20.10 form of that answer). The cache counts each layer once:
//!   the managed bytes are the sizes of the distinct layers (by chain) that managed images use
//!   and no unmanaged image uses, because only those can be freed by evicting. Layer sizes come
//!   from the image history (the engine reports each layer's own size there), matched to the
//!   layers bottom first; when a layer of zero bytes makes that match ambiguous, sizes are given
//!   to the highest layers they could belong to, which can only count shared bytes more than
//!   once (never too little), and an image whose history cannot be matched at all counts its
//!   whole `Size` on its own.
//! - **Over budget with nothing left to evict.** The images in use stay (including one image
//!   larger than the whole budget) and a warning says so; the budget is a target for what is
//!   idle, never a reason to fail a run. The check runs after each acquire, so disk use can
//!   exceed the budget by the images being pulled at that moment.
//! - **Removal.** `remove_image` without force, tag by tag: an image a container uses (running
//!   or stopped) is skipped before trying, and if one appears in between, the engine refuses
//!   and the image is skipped. An image being removed cannot be acquired until the removal has
//!   finished (the acquire waits, then pulls it again).

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::docker::{api_error, split_reference, status};
use super::{Docker, Error, RegistryAuth};

/// What the repository of an instance image contains in the official naming scheme
/// (`<namespace>/sweb.eval.x86_64.<instance>:<tag>`).
pub const INSTANCE_IMAGE_PATTERN: &str = "sweb.eval.";

/// How many image inspections run at once when the cache first looks at the engine's images.
const INSPECT_CONCURRENCY: usize = 4;

/// A cheap, cloneable handle on a worker's image cache; clones share the recency, the pins and
/// the budget.
#[derive(Clone)]
pub struct ImageCache {
    docker: Docker,
    budget_bytes: u64,
    /// A tag is managed when its repository contains this.
    pattern: Arc<str>,
    /// Credentials for pulls (a private registry or mirror).
    auth: Option<RegistryAuth>,
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Serialises evictions: each works from its own listing of the engine's images.
    evicting: tokio::sync::Mutex<()>,
    /// Woken whenever a removal ends, for acquires waiting on an image being removed.
    removal_done: Notify,
}

#[derive(Default)]
struct State {
    clock: u64,
    /// Image ID -> tick of its last use in this process.
    last_used: HashMap<String, u64>,
    /// Normalised reference or image ID -> how many guards (or acquires under way) hold it.
    pins: HashMap<String, usize>,
    /// Tags and ID of the image being removed.
    removing: HashSet<String>,
    /// Normalised references acquired through this cache.
    acquired: HashSet<String>,
    /// Image ID -> its layers (an ID names immutable content, so this never goes stale).
    layers: HashMap<String, Arc<ImageLayers>>,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn pin(&mut self, key: &str) {
        *self.pins.entry(key.to_string()).or_default() += 1;
    }

    fn unpin(&mut self, key: &str) {
        if let Some(n) = self.pins.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(key);
            }
        }
    }

    fn touch(&mut self, id: &str) {
        let tick = self.tick();
        self.last_used.insert(id.to_string(), tick);
    }

    fn is_pinned(&self, image: &Surveyed) -> bool {
        self.pins.contains_key(&image.id) || image.tags.iter().any(|t| self.pins.contains_key(t))
    }
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("budget_bytes", &self.budget_bytes)
            .field("pattern", &self.pattern)
            .finish_non_exhaustive()
    }
}

/// An acquired image: in use, so never evicted, until dropped (which marks it used once more).
#[must_use = "the image may be evicted as soon as the guard is dropped"]
pub struct ImageGuard {
    inner: Arc<Inner>,
    /// The reference as acquired, normalised.
    name: String,
    /// Set once the image is present.
    id: Option<String>,
}

impl ImageGuard {
    /// The reference acquired, normalised (`ubuntu` is `ubuntu:latest`).
    pub fn image(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for ImageGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageGuard").field("image", &self.name).field("id", &self.id).finish()
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        state.unpin(&self.name);
        if let Some(id) = &self.id {
            state.unpin(id);
            state.touch(id);
        }
    }
}

impl ImageCache {
    /// A cache of the instance images on `docker`'s engine holding at most `budget_bytes` of
    /// idle images (see the module documentation for how they are counted).
    pub fn new(docker: Docker, budget_bytes: u64) -> ImageCache {
        ImageCache {
            docker,
            budget_bytes,
            pattern: INSTANCE_IMAGE_PATTERN.into(),
            auth: None,
            inner: Arc::new(Inner {
                state: Mutex::default(),
                evicting: tokio::sync::Mutex::new(()),
                removal_done: Notify::new(),
            }),
        }
    }

    /// The same cache managing the images whose repository contains `pattern` instead of
    /// [`INSTANCE_IMAGE_PATTERN`] (a mirror with its own naming, or tests).
    pub fn managing_repositories_containing(mut self, pattern: &str) -> ImageCache {
        self.pattern = pattern.into();
        self
    }

    /// The same cache pulling with these registry credentials.
    pub fn with_auth(mut self, auth: Option<RegistryAuth>) -> ImageCache {
        self.auth = auth;
        self
    }

    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Makes sure `image` is present (pulling it as [`Docker::ensure_image`] does), marks it used
    /// now and in use until the guard drops; then, if the managed images exceed the budget,
    /// removes the least recently used ones that are not in use (never this one, never one a
    /// container uses). A failed eviction is logged: the image is there, the run can go on.
    pub async fn acquire(&self, image: &str) -> Result<ImageGuard, Error> {
        let mut guard = self.pin_reference(normalize(image)).await;
        // An eviction that started before the pin (and did not know the reference under this
        // spelling) may remove the image between the ensure and the inspection: once more.
        let mut id = None;
        for _ in 0..2 {
            self.docker.ensure_image(image, self.auth.clone()).await?;
            id = self.image_id(image).await?;
            if id.is_some() {
                break;
            }
        }
        let Some(id) = id else {
            return Err(Error::ImageUnavailable {
                image: image.to_string(),
                reason: "the image was removed each time it was pulled".into(),
            });
        };
        {
            let mut state = lock(&self.inner.state);
            state.pin(&id);
            state.touch(&id);
            state.acquired.insert(guard.name.clone());
        }
        guard.id = Some(id);
        if let Err(e) = self.evict().await {
            warn!(image, error = %e, "image cache eviction failed");
        }
        Ok(guard)
    }

    /// The tags of the managed images present locally, sorted: what the worker can start without
    /// a pull (for image-locality scheduling).
    pub async fn held(&self) -> Result<Vec<String>, Error> {
        let summaries = self.list_images().await?;
        let state = lock(&self.inner.state);
        let mut held: Vec<String> = summaries
            .into_iter()
            .filter(|s| is_managed(&s.tags, &s.digests, &self.pattern, &state.acquired))
            .flat_map(|s| s.tags)
            .collect();
        held.sort();
        Ok(held)
    }

    /// The bytes the managed images occupy that evicting them all would free.
    pub async fn managed_bytes(&self) -> Result<u64, Error> {
        Ok(managed_bytes(&self.survey().await?))
    }

    /// Evicts least recently used images that are not in use until the managed images fit the
    /// budget (or nothing evictable is left); returns the references removed (tags; the ID of
    /// an untagged image). Removals the engine refuses are skipped, not errors.
    pub async fn evict(&self) -> Result<Vec<String>, Error> {
        let _one_at_a_time = self.inner.evicting.lock().await;
        let budget = self.budget_bytes;
        let mut images = self.survey().await?;
        let mut bytes = managed_bytes(&images);
        let mut removed = Vec::new();
        if bytes <= budget {
            return Ok(removed);
        }
        let order = {
            let state = lock(&self.inner.state);
            eviction_order(&images, &state.last_used)
        };
        let order: Vec<String> = order.into_iter().map(|i| images[i].id.clone()).collect();
        for id in order {
            if bytes <= budget {
                break;
            }
            let Some(index) = images.iter().position(|i| i.id == id) else { continue };
            let image = &images[index];
            let references = image.references();
            {
                let mut state = lock(&self.inner.state);
                if state.is_pinned(image) {
                    continue;
                }
                state.removing.insert(image.id.clone());
                state.removing.extend(references.iter().cloned());
            }
            let (gone, all_gone) = self.remove(&references).await;
            {
                let mut state = lock(&self.inner.state);
                state.removing.remove(&id);
                for reference in &references {
                    state.removing.remove(reference);
                }
                if all_gone {
                    state.last_used.remove(&id);
                }
            }
            self.inner.removal_done.notify_waiters();
            let before = bytes;
            removed.extend(gone);
            if all_gone {
                images.remove(index);
                bytes = managed_bytes(&images);
                info!(
                    image = %references.join(", "),
                    freed_bytes = before - bytes,
                    managed_bytes = bytes,
                    budget_bytes = budget,
                    "evicted image"
                );
            }
        }
        if bytes > budget {
            warn!(
                managed_bytes = bytes,
                budget_bytes = budget,
                "the managed images in use exceed the image cache's budget; keeping them"
            );
        }
        Ok(removed)
    }

    /// Pins `name` for a new guard, first waiting for any removal of it under way.
    async fn pin_reference(&self, name: String) -> ImageGuard {
        loop {
            let removal_done = {
                let mut state = lock(&self.inner.state);
                if !state.removing.contains(&name) {
                    state.pin(&name);
                    return ImageGuard { inner: self.inner.clone(), name, id: None };
                }
                // Created under the lock, so the removal's end cannot be missed.
                self.inner.removal_done.notified()
            };
            debug!(image = %name, "waiting for the image's eviction to finish");
            removal_done.await;
        }
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, Error> {
        match self.docker.api.inspect_image(image).await {
            Ok(inspect) => Ok(inspect.id),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(api_error("inspect image", e)),
        }
    }

    /// Removes the references (without force) until one is refused. Returns those removed, and
    /// whether all were (the image is gone).
    async fn remove(&self, references: &[String]) -> (Vec<String>, bool) {
        let options = RemoveImageOptionsBuilder::new().force(false).noprune(false).build();
        let mut removed = Vec::new();
        for reference in references {
            match self.docker.api.remove_image(reference, Some(options.clone()), None).await {
                Ok(_) => removed.push(reference.clone()),
                Err(e) if status(&e) == Some(404) => {}
                Err(e) if status(&e) == Some(409) => {
                    info!(image = %reference, reason = %e, "image in use; not evicted");
                    return (removed, false);
                }
                Err(e) => {
                    warn!(image = %reference, error = %e, "could not remove image");
                    return (removed, false);
                }
            }
        }
        (removed, true)
    }

    async fn list_images(&self) -> Result<Vec<Summary>, Error> {
        let options = ListImagesOptionsBuilder::new().all(false).build();
        let list =
            self.docker.api.list_images(Some(options)).await.map_err(|e| api_error("list images", e))?;
        Ok(list
            .into_iter()
            .map(|s| Summary {
                id: s.id,
                tags: s
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .map(|t| self.docker.engine().familiar_name(&t).to_string())
                    .collect(),
                digests: s.repo_digests.into_iter().filter(|d| d != "<none>@<none>").collect(),
            })
            .collect())
    }

    /// The engine's images, classified, with their layers and whether containers use them.
    async fn survey(&self) -> Result<Vec<Surveyed>, Error> {
        let summaries = self.list_images().await?;
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let containers = self
            .docker
            .api
            .list_containers(Some(options))
            .await
            .map_err(|e| api_error("list containers", e))?;
        let used: HashSet<String> = containers.into_iter().filter_map(|c| c.image_id).collect();

        let missing: Vec<String> = {
            let mut state = lock(&self.inner.state);
            let present: HashSet<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
            state.layers.retain(|id, _| present.contains(id.as_str()));
            summaries.iter().filter(|s| !state.layers.contains_key(&s.id)).map(|s| s.id.clone()).collect()
        };
        let loaded: Vec<(String, Option<ImageLayers>)> = futures_util::stream::iter(missing)
            .map(|id| async move {
                let layers = self.load_layers(&id).await?;
                Ok::<_, Error>((id, layers))
            })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .try_collect()
            .await?;

        let mut state = lock(&self.inner.state);
        for (id, layers) in loaded {
            if let Some(layers) = layers {
                state.layers.insert(id, Arc::new(layers));
            }
        }
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                // An image removed since the listing has no layers: leave it out.
                let layers = state.layers.get(&s.id)?.clone();
                Some(Surveyed {
                    managed: is_managed(&s.tags, &s.digests, &self.pattern, &state.acquired),
                    used_by_container: used.contains(&s.id),
                    id: s.id,
                    tags: s.tags,
                    layers,
                })
            })
            .collect())
    }

    /// An image's layers and sizes; `None` if it is gone.
    async fn load_layers(&self, id: &str) -> Result<Option<ImageLayers>, Error> {
        let api = &self.docker.api;
        let inspect = match api.inspect_image(id).await {
            Ok(inspect) => inspect,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(api_error("inspect image", e)),
        };
        let history = match api.image_history(id).await {
            Ok(history) => history,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(api_error("image history", e)),
        };
        let diff_ids = inspect.root_fs.and_then(|r| r.layers).unwrap_or_default();
        let chain = chain_keys(&diff_ids);
        // The engine lists history newest first.
        let entry_sizes: Vec<i64> = history.iter().rev().map(|h| h.size).collect();
        let sized = match layer_sizes(&entry_sizes, chain.len()) {
            Some(sizes) => chain.iter().copied().zip(sizes).filter(|&(_, size)| size > 0).collect(),
            None => {
                let size = inspect.size.unwrap_or(0).max(0) as u64;
                debug!(image = id, "image history does not match its layers; counting its whole size");
                vec![(key_of(&[id]), size)]
            }
        };
        let timestamp = |t: Option<String>| {
            t.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .and_then(|t| t.timestamp_nanos_opt())
                .filter(|&t| t > 0)
        };
        let last_tagged = timestamp(inspect.metadata.and_then(|m| m.last_tag_time));
        let arrived = last_tagged.or(timestamp(inspect.created)).unwrap_or(0);
        Ok(Some(ImageLayers { chain, sized, arrived }))
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent between statements; a panic elsewhere must not stop evictions.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One image of the engine's list.
struct Summary {
    id: String,
    tags: Vec<String>,
    digests: Vec<String>,
}

/// An image as an eviction sees it.
struct Surveyed {
    id: String,
    tags: Vec<String>,
    managed: bool,
    used_by_container: bool,
    layers: Arc<ImageLayers>,
}

impl Surveyed {
    /// What to remove: its tags, or its ID when it has none.
    fn references(&self) -> Vec<String> {
        if self.tags.is_empty() {
            vec![self.id.clone()]
        } else {
            self.tags.clone()
        }
    }
}

struct ImageLayers {
    /// One key per layer, bottom first, naming the layer together with everything under it
    /// (as the engine's chain IDs do): equal keys are one layer on disk.
    chain: Vec<u64>,
    /// The layers with content: (chain key, bytes).
    sized: Vec<(u64, u64)>,
    /// When the image arrived here, as far as the engine tells (Unix nanoseconds; 0 if unknown).
    arrived: i64,
}

/// How recently an image was used: any use in this process ranks above any earlier arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Recency {
    Arrived(i64),
    Used(u64),
}

fn is_managed(tags: &[String], digests: &[String], pattern: &str, acquired: &HashSet<String>) -> bool {
    let matches = |reference: &str| {
        let repository = reference.split_once('@').map_or_else(|| split_reference(reference).0, |(r, _)| r);
        repository.contains(pattern)
    };
    if tags.is_empty() {
        return digests.iter().any(|d| matches(d));
    }
    tags.iter().all(|t| matches(t) || acquired.contains(t))
}

/// The bytes of the distinct layers managed images use and unmanaged ones do not.
fn managed_bytes(images: &[Surveyed]) -> u64 {
    let kept: HashSet<u64> =
        images.iter().filter(|i| !i.managed).flat_map(|i| i.layers.chain.iter().copied()).collect();
    let mut counted = HashSet::new();
    images
        .iter()
        .filter(|i| i.managed)
        .flat_map(|i| i.layers.sized.iter())
        .filter(|&&(key, _)| !kept.contains(&key) && counted.insert(key))
        .map(|&(_, size)| size)
        .sum()
}

/// Indices of the images an eviction may remove, least recently used first: managed, used by no
/// container, and no other image built on them. (Pins are checked at removal time.)
fn eviction_order(images: &[Surveyed], last_used: &HashMap<String, u64>) -> Vec<usize> {
    let below_others: HashSet<u64> = images
        .iter()
        .flat_map(|i| i.layers.chain.split_last().map_or(&[][..], |(_, below)| below).iter().copied())
        .collect();
    let is_base = |i: &Surveyed| i.layers.chain.last().is_some_and(|top| below_others.contains(top));
    let recency = |i: &Surveyed| match last_used.get(&i.id) {
        Some(&tick) => Recency::Used(tick),
        None => Recency::Arrived(i.layers.arrived),
    };
    let mut order: Vec<usize> = (0..images.len())
        .filter(|&n| {
            let i = &images[n];
            i.managed && !i.used_by_container && !is_base(i)
        })
        .collect();
    order.sort_by(|&a, &b| (recency(&images[a]), &images[a].id).cmp(&(recency(&images[b]), &images[b].id)));
    order
}

/// Each layer's size, bottom first, from the sizes of the history entries (oldest first). The
/// engine gives each entry that made a layer that layer's size, and 0 to entries that made none
/// (`ENV`, `CMD`, ...); a layer of 0 bytes is indistinguishable from those. So the entries of
/// positive size are the layers of content, in order, and each is placed as high as the zeros
/// before it allow: an error then only ever makes a shared layer look unshared (counting its
/// bytes too often, never too little). `None` when the history cannot describe these layers.
fn layer_sizes(entry_sizes: &[i64], layers: usize) -> Option<Vec<u64>> {
    let positive = entry_sizes.iter().filter(|&&s| s > 0).count();
    let zeros = entry_sizes.len() - positive;
    let empty_layers = layers.checked_sub(positive)?;
    if empty_layers > zeros {
        return None;
    }
    let mut sizes = vec![0; layers];
    let (mut positive_before, mut zeros_before) = (0, 0);
    for &size in entry_sizes {
        if size > 0 {
            sizes[positive_before + zeros_before.min(empty_layers)] = size as u64;
            positive_before += 1;
        } else {
            zeros_before += 1;
        }
    }
    Some(sizes)
}

/// Keys naming each layer with the layers under it, from the image's diff IDs (bottom first).
fn chain_keys(diff_ids: &[String]) -> Vec<u64> {
    let mut below = 0u64;
    diff_ids
        .iter()
        .map(|diff_id| {
            below = key_of(&[&below.to_string(), diff_id]);
            below
        })
        .collect()
}

fn key_of(parts: &[&str]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// The reference as the engine lists tags: `docker.io/` and `library/` dropped, `:latest` added
/// when there is no tag. Digest references are kept as they are.
fn normalize(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let (name, tag) = split_reference(image);
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let name = match name.strip_prefix("library/") {
        Some(rest) if !rest.contains('/') => rest,
        _ => name,
    };
    format!("{name}:{tag}")
}

#[cfg(test)]
mod unit {
    use super::*;

    fn image(id: &str, managed: bool, diff_ids: &[&str], sizes: &[u64], arrived: i64) -> Surveyed {
        let diff_ids: Vec<String> = diff_ids.iter().map(|d| d.to_string()).collect();
        let chain = chain_keys(&diff_ids);
        let sized = chain.iter().copied().zip(sizes.iter().copied()).filter(|&(_, s)| s > 0).collect();
        Surveyed {
            id: id.into(),
            tags: vec![format!("{id}:latest")],
            managed,
            used_by_container: false,
            layers: Arc::new(ImageLayers { chain, sized, arrived }),
        }
    }

    #[test]
    fn references_are_normalised_as_the_engine_lists_tags() {
        assert_eq!(normalize("ubuntu"), "ubuntu:latest");
        assert_eq!(normalize("docker.io/library/ubuntu:22.04"), "ubuntu:22.04");
        assert_eq!(normalize("docker.io/swebench/sweb.eval.x86_64.a:v1"), "swebench/sweb.eval.x86_64.a:v1");
        assert_eq!(normalize("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(normalize("x/y@sha256:abc"), "x/y@sha256:abc");
    }

    #[test]
    fn instance_images_and_acquired_ones_are_managed() {
        let acquired = HashSet::from(["python:3.11".to_string()]);
        let managed = |tags: &[&str], digests: &[&str]| {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            let digests: Vec<String> = digests.iter().map(|t| t.to_string()).collect();
            is_managed(&tags, &digests, INSTANCE_IMAGE_PATTERN, &acquired)
        };
        assert!(managed(&["swebench/sweb.eval.x86_64.django_1776_django-11099:latest"], &[]));
        assert!(managed(&["registry.local:5000/m/sweb.eval.x86_64.a:v2", "python:3.11"], &[]));
        assert!(managed(&[], &["swebench/sweb.eval.x86_64.a@sha256:abc"]));
        // Base images, an instance image that is also tagged as something else, a pattern in
        // the tag rather than the repository, an untagged image of unknown origin.
        assert!(!managed(&["steerbench/debian-base:bookworm"], &[]));
        assert!(!managed(&["swebench/sweb.eval.x86_64.a:latest", "steerbench/base:1"], &[]));
        assert!(!managed(&["steerbench/base:sweb.eval.x"], &[]));
        assert!(!managed(&[], &[]));
        assert!(!managed(&[], &["steerbench/base@sha256:abc"]));
    }

    #[test]
    fn history_sizes_are_matched_to_layers() {
        // Unambiguous: as many layers as entries of positive size, or as entries.
        assert_eq!(layer_sizes(&[125, 0, 152, 0], 2), Some(vec![125, 152]));
        assert_eq!(layer_sizes(&[1, 0, 2], 3), Some(vec![1, 0, 2]));
        // fixture-base: debootstrap (125 MB), ENV, RUN apt (152 MB), WORKDIR (which the classic
        // builder makes a layer of 0 bytes), CMD: 3 layers, truly [125, 152, 0]. Which zero is
        // the layer cannot be told, so 152 goes as high as it could be, one layer above its
        // own: every image that has one of the two has the other, so nothing is miscounted.
        assert_eq!(layer_sizes(&[125, 0, 152, 0, 0], 3), Some(vec![125, 0, 152]));
        // A fixture instance image on it adds COPY, ARG, RUN, LABELs: 5 layers, the top two
        // (its own) placed exactly.
        assert_eq!(layer_sizes(&[125, 0, 152, 0, 0, 29, 0, 2, 0, 0, 0], 5), Some(vec![125, 0, 152, 29, 2]));
        // Ambiguous: which of the two zero entries is the layer? Sizes go as high as possible.
        assert_eq!(layer_sizes(&[0, 5, 0], 2), Some(vec![0, 5]));
        // More layers of content than layers, or layers the history cannot account for.
        assert_eq!(layer_sizes(&[1, 2, 3], 2), None);
        assert_eq!(layer_sizes(&[1, 0], 3), None);
        assert_eq!(layer_sizes(&[], 0), Some(vec![]));
    }

    #[test]
    fn shared_layers_count_once_and_kept_layers_not_at_all() {
        // Two instances on one environment (base 100, env 1000), a third on another env.
        let images = vec![
            image("a", true, &["base", "env1", "a"], &[100, 1000, 10], 0),
            image("b", true, &["base", "env1", "b"], &[100, 1000, 20], 0),
            image("c", true, &["base", "env2", "c"], &[100, 500, 30], 0),
        ];
        assert_eq!(managed_bytes(&images), 100 + 1000 + 10 + 20 + 500 + 30);
        // An unmanaged image holding the base: its bytes cannot be freed, so they do not count.
        let mut images = images;
        images.push(image("base", false, &["base"], &[100], 0));
        assert_eq!(managed_bytes(&images), 1000 + 10 + 20 + 500 + 30);
        // Same diff on another parent is another layer.
        let images =
            vec![image("x", true, &["p", "d"], &[1, 7], 0), image("y", true, &["q", "d"], &[2, 7], 0)];
        assert_eq!(managed_bytes(&images), 1 + 7 + 2 + 7);
    }

    #[test]
    fn eviction_order_is_least_recently_used_first_and_skips_what_must_stay() {
        let mut images = vec![
            image("old", true, &["o"], &[1], 100),
            image("older", true, &["p"], &[1], 50),
            image("used-first", true, &["u1"], &[1], 900),
            image("used-last", true, &["u2"], &[1], 10),
            image("unmanaged", false, &["x"], &[1], 0),
            image("in-container", true, &["c"], &[1], 0),
            image("parent", true, &["base"], &[1], 0),
            image("child", true, &["base", "child"], &[1, 1], 1000),
            // Same layers as `old`, different config: not a base of it.
            image("sibling", true, &["o"], &[1], 101),
        ];
        images[5].used_by_container = true;
        let last_used = HashMap::from([("used-last".to_string(), 7), ("used-first".to_string(), 3)]);
        let order: Vec<&str> =
            eviction_order(&images, &last_used).into_iter().map(|i| images[i].id.as_str()).collect();
        assert_eq!(order, ["older", "old", "sibling", "child", "used-first", "used-last"]);
    }
}

//! Files in and out of a sandbox through the engine's archive API (tar), and the final patch.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;

use super::docker::{container_error, status};
use super::output::CappedOutput;
use super::{Error, Sandbox};

/// The largest patch [`Sandbox::diff`] returns.
pub const MAX_PATCH_BYTES: usize = 64 * 1024 * 1024;

/// How long `git add` + `git diff` may take.
const DIFF_TIMEOUT: Duration = Duration::from_secs(300);

/// Slack over `max_bytes` for the tar framing of one file (headers, long names, padding).
const TAR_OVERHEAD: u64 = 16 * 1024;

/// Takes the diff of the working tree (new files included, ignored files not) against `HEAD`
/// without touching the repository's index: `git add -A` into a copy of the index, then
/// `git diff --cached --binary HEAD`. `--binary` because the harness applies patches with
/// `git apply`, which refuses a patch whose binary files appear only as "Binary files differ".
const DIFF_SCRIPT: &str = r#"
g() { git -c safe.directory='*' -c core.quotepath=true "$@"; }
index=$(g rev-parse --git-path index) || exit
tmp=$(mktemp -d) || exit
trap 'rm -rf "$tmp"' EXIT
if [ -f "$index" ]; then cp "$index" "$tmp/index" || exit; fi
export GIT_INDEX_FILE="$tmp/index"
g add -A >/dev/null || exit
base=HEAD
g rev-parse -q --verify HEAD >/dev/null || base=$(g hash-object -t tree /dev/null)
g diff --cached --binary --no-color --no-ext-diff --no-textconv --src-prefix=a/ --dst-prefix=b/ "$base"
"#;

impl Sandbox {
    /// Writes `contents` to `path` (absolute, or relative to the workdir) with permission bits
    /// `mode`, owned by root, creating missing parent directories.
    pub async fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), Error> {
        let path = self.absolute(path);
        let (parent, name) = match path.rsplit_once('/') {
            Some(("", name)) => ("/", name),
            Some((parent, name)) => (parent, name),
            None => unreachable!("absolute paths contain a slash"),
        };
        if name.is_empty() {
            return Err(Error::NotAFile { path: path.clone(), kind: "directory".into() });
        }
        let archive: Bytes = single_file_tar(name, contents, mode)
            .map_err(|e| Error::Docker { operation: "build tar archive", source: e.into() })?
            .into();
        match self.upload(parent, archive.clone()).await {
            Err(Error::NotFound { .. }) => {
                let argv = ["mkdir", "-p", "--", parent].map(String::from).to_vec();
                let mkdir = self.container.run_exec(argv, Some(Duration::from_secs(30)), |_, _| {}).await?;
                if mkdir.exit_code != Some(0) {
                    return Err(Error::NotFound { path: parent.to_string() });
                }
                self.upload(parent, archive).await
            }
            other => other,
        }
    }

    async fn upload(&self, dir: &str, archive: Bytes) -> Result<(), Error> {
        let options = UploadToContainerOptionsBuilder::new().path(dir).build();
        let body = bollard::body_full(archive);
        match self.container.docker.api.upload_to_container(self.id(), Some(options), body).await {
            Ok(()) => Ok(()),
            // 404 is also what a missing container gives: tell them apart.
            Err(e) if status(&e) == Some(404) && e.to_string().contains("No such container") => {
                Err(container_error("upload file", self.id(), e))
            }
            Err(e) if status(&e) == Some(404) => Err(Error::NotFound { path: dir.to_string() }),
            Err(e) => Err(container_error("upload file", self.id(), e)),
        }
    }

    /// Reads the regular file at `path` (absolute, or relative to the workdir; symlinks are
    /// followed). [`Error::TooLarge`] if it holds more than `max_bytes`.
    pub async fn read_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        let requested = self.absolute(path);
        let mut path = requested.clone();
        for _ in 0..16 {
            let options = ContainerArchiveInfoOptionsBuilder::new().path(&path).build();
            let stat =
                match self.container.docker.api.get_container_archive_info(self.id(), Some(options)).await {
                    Ok(stat) => stat,
                    Err(e) if status(&e) == Some(404) => {
                        // Either the path or the container: ask about the container.
                        self.container
                            .docker
                            .api
                            .inspect_container(self.id(), None)
                            .await
                            .map_err(|e| container_error("inspect container", self.id(), e))?;
                        return Err(Error::NotFound { path: requested });
                    }
                    Err(e) => return Err(container_error("stat file", self.id(), e)),
                };
            // Docker leaves `linkTarget` empty for a file that is not a link; Podman names the
            // file itself there.
            if !stat.link_target.is_empty() && stat.link_target != path {
                path = if stat.link_target.starts_with('/') {
                    stat.link_target
                } else {
                    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                    format!("{dir}/{}", stat.link_target)
                };
                continue;
            }
            if let Some(kind) = file_kind(stat.file_mode) {
                return Err(Error::NotAFile { path: requested, kind: kind.into() });
            }
            if stat.size as u64 > max_bytes {
                return Err(Error::TooLarge { path: requested, max_bytes });
            }
            return self.download(&path, &requested, max_bytes).await;
        }
        Err(Error::NotAFile { path: requested, kind: "chain of more than 16 symlinks".into() })
    }

    async fn download(&self, path: &str, requested: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        let options = DownloadFromContainerOptionsBuilder::new().path(path).build();
        let mut stream = self.container.docker.api.download_from_container(self.id(), Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) if status(&e) == Some(404) => {
                    return Err(Error::NotFound { path: requested.to_string() })
                }
                Err(e) => return Err(container_error("download file", self.id(), e)),
            };
            archive.extend_from_slice(&chunk);
            if archive.len() as u64 > max_bytes + TAR_OVERHEAD {
                // The file grew after it was measured.
                return Err(Error::TooLarge { path: requested.to_string(), max_bytes });
            }
        }
        let bad_archive =
            |e: std::io::Error| Error::Docker { operation: "read tar archive", source: e.into() };
        let mut tar = tar::Archive::new(archive.as_slice());
        let mut entries = tar.entries().map_err(bad_archive)?;
        let mut entry = match entries.next() {
            Some(entry) => entry.map_err(bad_archive)?,
            None => return Err(Error::NotFound { path: requested.to_string() }),
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            let kind = format!("{:?}", entry.header().entry_type()).to_lowercase();
            return Err(Error::NotAFile { path: requested.to_string(), kind });
        }
        if entry.size() > max_bytes {
            return Err(Error::TooLarge { path: requested.to_string(), max_bytes });
        }
        let mut contents = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut contents).map_err(bad_archive)?;
        Ok(contents)
    }

    /// The final patch: the working tree's changes against `HEAD` in the workdir's repository,
    /// new (untracked, not ignored) files included, binary files as `GIT binary patch` hunks;
    /// what `git apply` in the SWE-bench harness expects. The repository's index is left as it
    /// was. An empty string when nothing changed. [`Error::PatchNotUtf8`] if a changed text
    /// file is not UTF-8 (the bytes are in the error), [`Error::TooLarge`] over
    /// [`MAX_PATCH_BYTES`](super::MAX_PATCH_BYTES).
    pub async fn diff(&self) -> Result<String, Error> {
        let argv = ["bash", "-c", DIFF_SCRIPT].map(String::from).to_vec();
        let mut patch = Vec::new();
        let mut overflow = false;
        let mut errors = CappedOutput::new(8 * 1024);
        let finished = self
            .container
            .run_exec(argv, Some(DIFF_TIMEOUT), |is_stderr, bytes| {
                if is_stderr {
                    errors.push(bytes);
                } else if patch.len() + bytes.len() <= MAX_PATCH_BYTES {
                    patch.extend_from_slice(bytes);
                } else {
                    overflow = true;
                }
            })
            .await?;
        if finished.timed_out || finished.exit_code != Some(0) {
            let mut output = errors.finish().text;
            if finished.timed_out {
                output.push_str(&format!("[timed out after {DIFF_TIMEOUT:?}]"));
            }
            return Err(Error::Git { exit_code: finished.exit_code, output });
        }
        if overflow {
            return Err(Error::TooLarge { path: "the diff".into(), max_bytes: MAX_PATCH_BYTES as u64 });
        }
        String::from_utf8(patch).map_err(|e| {
            let valid_up_to = e.utf8_error().valid_up_to();
            Error::PatchNotUtf8 { patch: e.into_bytes(), valid_up_to }
        })
    }

    fn absolute(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.workdir().trim_end_matches('/'))
        }
    }
}

/// A tar archive holding one regular file owned by root.
fn single_file_tar(name: &str, contents: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let mut builder = tar::Builder::new(Vec::with_capacity(contents.len() + 2048));
    builder.append_data(&mut header, name, contents)?;
    builder.into_inner()
}

/// What a Go `os.FileMode` (as the engine reports it) says the path is, if not a regular file.
fn file_kind(mode: u32) -> Option<&'static str> {
    const KINDS: [(u32, &str); 6] = [
        (1 << 31, "directory"),
        (1 << 27, "symlink"),
        (1 << 26, "device"),
        (1 << 25, "named pipe"),
        (1 << 24, "socket"),
        (1 << 19, "irregular file"),
    ];
    KINDS.iter().find(|(bit, _)| mode & bit != 0).map(|(_, kind)| *kind)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn a_single_file_archive_round_trips() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let archive = single_file_tar("data.bin", &bytes, 0o640).unwrap();
        let mut tar = tar::Archive::new(archive.as_slice());
        let mut entry = tar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().mode().unwrap(), 0o640);
        assert_eq!(entry.path().unwrap().to_str(), Some("data.bin"));
        let mut back = Vec::new();
        entry.read_to_end(&mut back).unwrap();
        assert_eq!(back, bytes);
    }

    #[test]
    fn file_modes_are_decoded() {
        assert_eq!(file_kind(0o644), None);
        assert_eq!(file_kind((1 << 31) | 0o755), Some("directory"));
        assert_eq!(file_kind((1 << 27) | 0o777), Some("symlink"));
    }
}

//! Images: SIF files and references such as `docker://rocker/rstudio:4.4.2`, the image cache, and
//! `pull`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// Reference schemes that the runtimes can pull or build from.
const SCHEMES: &[&str] = &[
    "docker://",
    "docker-archive:",
    "docker-daemon:",
    "oci-archive:",
    "oci:",
    "library://",
    "oras://",
    "shub://",
    "http://",
    "https://",
];

/// Free space a pull from a registry needs in the cache: layers and the SIF are both held there
/// for a while, and Rocker images make SIF files of 1 to 3 GiB.
/// NOTE: an estimate; the real need depends on the image and is not known before the pull.
const REMOTE_PULL_SPACE: u64 = 8 << 30;

/// What `--image` names: a SIF file on disk or a reference to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    File(PathBuf),
    Reference(String),
}

impl ImageSource {
    pub fn parse(text: &str) -> ImageSource {
        if SCHEMES.iter().any(|scheme| text.starts_with(scheme)) {
            ImageSource::Reference(text.to_owned())
        } else {
            ImageSource::File(PathBuf::from(text))
        }
    }
}

/// The fields of a SIF global header that identify an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SifHeader {
    /// The image's UUID, as hex.
    pub id: String,
    pub created_at: i64,
    pub modified_at: i64,
    pub arch: String,
}

/// Reads and checks the 128-byte SIF global header: magic `SIF_MAGIC\0` at offset 32, version
/// `01\0` at 42, architecture at 45, UUID at 48, creation and modification times (little-endian
/// int64 Unix seconds) at 64 and 72.
pub fn read_sif_header(path: &Path) -> Result<SifHeader> {
    let mut file = std::fs::File::open(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => Error::usage(format!(
            "image {} does not exist",
            path.display()
        ))
        .with_hint(
            "give the path of a .sif file, or a reference such as docker://rocker/rstudio:4.4.2",
        ),
        _ => Error::io("open image", path, err),
    })?;
    let mut header = [0u8; 128];
    let not_sif = || {
        Error::usage(format!("image {} is not a SIF file", path.display()))
            .with_hint("build or pull a SIF first, for example `hpc-rstudio pull docker://rocker/rstudio:4.4.2`")
    };
    file.read_exact(&mut header).map_err(|_| not_sif())?;
    if &header[32..42] != b"SIF_MAGIC\0" || &header[42..45] != b"01\0" {
        return Err(not_sif());
    }
    let int64 = |offset: usize| i64::from_le_bytes(header[offset..offset + 8].try_into().unwrap());
    let id = header[48..64].iter().map(|b| format!("{b:02x}")).collect();
    let arch = match &header[45..47] {
        b"01" => "386",
        b"02" => "amd64",
        b"03" => "arm",
        b"04" => "arm64",
        b"05" => "ppc64",
        b"06" => "ppc64le",
        b"11" => "s390x",
        b"12" => "riscv64",
        _ => "other",
    };
    Ok(SifHeader {
        id,
        created_at: int64(64),
        modified_at: int64(72),
        arch: arch.to_owned(),
    })
}

/// A SIF ready to run, with what identifies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub path: PathBuf,
    /// The reference it was pulled from, when it came from the cache.
    pub reference: Option<String>,
    pub header: SifHeader,
    pub size: u64,
}

impl Image {
    /// A key that changes whenever the file is replaced, even by an image of the same tag.
    pub fn identity(&self) -> String {
        format!(
            "{}-{}-{}",
            self.header.id, self.header.modified_at, self.size
        )
    }

    pub fn open(path: &Path, reference: Option<String>) -> Result<Image> {
        let header = read_sif_header(path)?;
        let size = std::fs::metadata(path)
            .map_err(|err| Error::io("inspect image", path, err))?
            .len();
        let path = std::fs::canonicalize(path)
            .map_err(|err| Error::io("resolve image path", path, err))?;
        if header.arch != "other" && header.arch != host_arch() {
            return Err(Error::usage(format!(
                "image {} is built for {}, but this host is {}",
                path.display(),
                header.arch,
                host_arch()
            ))
            .with_hint("pull the image for this architecture"));
        }
        Ok(Image {
            path,
            reference,
            header,
            size,
        })
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The file name a reference is cached under: the reference without its scheme, with every
/// character other than letters, digits, `.`, `_` and `-` replaced by `_`.
pub fn cache_file_name(reference: &str) -> String {
    let scheme_end = SCHEMES
        .iter()
        .find(|s| reference.starts_with(*s))
        .map_or(0, |s| s.len());
    let scheme = reference[..scheme_end].trim_end_matches([':', '/']);
    let body: String = reference[scheme_end..]
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{scheme}_{}.sif", body.trim_matches('_'))
}

/// Resolves `--image` to a SIF on disk, pulling a reference into the cache when it is not there.
pub fn resolve(text: &str, cache: &Path, runtime: &Runtime) -> Result<Image> {
    match ImageSource::parse(text) {
        ImageSource::File(path) => Image::open(&path, None),
        ImageSource::Reference(reference) => {
            let path = cache.join(cache_file_name(&reference));
            if !path.exists() {
                eprintln!(
                    "Pulling {reference} into {} (only the first time)...",
                    path.display()
                );
                pull(&reference, cache, runtime, false)?;
            }
            Image::open(&path, Some(reference))
        }
    }
}

/// What `pull` did.
pub enum Pulled {
    Fetched(PathBuf),
    AlreadyPresent(PathBuf),
}

/// Pulls `reference` into the cache as a SIF. An existing file is reused unless `force` is set.
pub fn pull(reference: &str, cache: &Path, runtime: &Runtime, force: bool) -> Result<Pulled> {
    if !matches!(ImageSource::parse(reference), ImageSource::Reference(_)) {
        return Err(Error::usage(format!("'{reference}' is not an image reference"))
            .with_hint("give a reference such as docker://rocker/rstudio:4.4.2 or oci-archive:/path/image.tar"));
    }
    crate::private_fs::create_private_dir(cache)?;
    let target = cache.join(cache_file_name(reference));
    if target.exists() && !force {
        return Ok(Pulled::AlreadyPresent(target));
    }
    check_free_space(cache, required_space(reference))?;

    // The runtime keeps layers in its own cache, which defaults to a directory in HOME, where
    // quotas are small; keep it beside the images instead.
    let runtime_cache = cache.join("runtime-cache");
    crate::private_fs::create_private_dir(&runtime_cache)?;
    let partial = cache.join(format!(".partial-{}", cache_file_name(reference)));
    let _ = std::fs::remove_file(&partial);
    let mut cmd = runtime.command();
    cmd.arg("pull").arg("--force").arg(&partial).arg(reference);
    cmd.env("APPTAINER_CACHEDIR", &runtime_cache)
        .env("SINGULARITY_CACHEDIR", &runtime_cache);
    let output = crate::process::run(&mut cmd, None, Duration::from_secs(6 * 3600))?;
    if !output.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(crate::process::failure(&cmd, &output)
            .with_hint("check the reference and your network access to the registry; nothing in the cache was changed"));
    }
    read_sif_header(&partial)?;
    std::fs::rename(&partial, &target)
        .map_err(|err| Error::io("move pulled image to", &target, err))?;
    Ok(Pulled::Fetched(target))
}

fn required_space(reference: &str) -> u64 {
    let local = ["oci-archive:", "docker-archive:"]
        .iter()
        .find_map(|scheme| reference.strip_prefix(scheme));
    match local.and_then(|path| std::fs::metadata(path.split(':').next().unwrap_or(path)).ok()) {
        // The archive is unpacked, then squashed: about three times its size at the peak.
        Some(meta) => meta.len().saturating_mul(3),
        None => REMOTE_PULL_SPACE,
    }
}

fn check_free_space(dir: &Path, needed: u64) -> Result<()> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|err| {
        Error::failed(format!(
            "cannot read free space of {}: {err}",
            dir.display()
        ))
    })?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free >= needed {
        return Ok(());
    }
    Err(Error::failed(format!(
        "not enough free space in {}: {} MiB free, about {} MiB needed",
        dir.display(),
        free >> 20,
        needed >> 20
    ))
    .with_hint("free some space, or set image_cache in ~/.config/hpc-rstudio/config.toml to a larger file system (a project or scratch directory)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_files() {
        assert_eq!(
            ImageSource::parse("docker://rocker/rstudio:4.4.2"),
            ImageSource::Reference("docker://rocker/rstudio:4.4.2".into())
        );
        assert_eq!(
            ImageSource::parse("rstudio.sif"),
            ImageSource::File("rstudio.sif".into())
        );
        assert!(matches!(
            ImageSource::parse("oci-archive:/x/y.tar"),
            ImageSource::Reference(_)
        ));
    }

    #[test]
    fn cache_names() {
        assert_eq!(
            cache_file_name("docker://rocker/rstudio:4.4.2"),
            "docker_rocker_rstudio_4.4.2.sif"
        );
        assert_eq!(
            cache_file_name("oci-archive:/opt/x/r.tar"),
            "oci-archive_opt_x_r.tar.sif"
        );
    }

    #[test]
    fn header_of_non_sif_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sif");
        std::fs::write(&path, vec![b'x'; 200]).unwrap();
        let err = read_sif_header(&path).unwrap_err();
        assert!(err.message.contains("is not a SIF file"));
        let err = read_sif_header(&dir.path().join("missing.sif")).unwrap_err();
        assert!(err.message.contains("does not exist"));
    }

    #[test]
    fn header_fields() {
        let mut bytes = vec![0u8; 128];
        bytes[32..42].copy_from_slice(b"SIF_MAGIC\0");
        bytes[42..45].copy_from_slice(b"01\0");
        bytes[45..48].copy_from_slice(b"02\0");
        bytes[48..64].copy_from_slice(&[0xab; 16]);
        bytes[72..80].copy_from_slice(&1_700_000_000i64.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sif");
        std::fs::write(&path, &bytes).unwrap();
        let header = read_sif_header(&path).unwrap();
        assert_eq!(header.arch, "amd64");
        assert_eq!(header.id, "ab".repeat(16));
        assert_eq!(header.modified_at, 1_700_000_000);
    }
}

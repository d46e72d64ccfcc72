#!/usr/bin/env python3
"""Pack a root filesystem directory into an OCI image archive with one gzip layer.

Usage: make-oci-archive.py ROOTFS OUT.tar REF KEY=VALUE...

The archive contains an OCI image layout (oci-layout, index.json, blobs/sha256/...), the form
`apptainer pull x.sif oci-archive:OUT.tar` reads, so a pull can be tested without a registry.
KEY=VALUE pairs become the image's Env, as Docker's ENV lines do. REF becomes the manifest's
org.opencontainers.image.ref.name annotation. Apptainer's own /.singularity.d is left out,
and file owners and times are normalised, so the same tree gives the same layer.
"""

import gzip
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile

# Fixed modification time for every entry (2024-01-01T00:00:00Z), for reproducible layers.
LAYER_MTIME = 1704067200


def normalise(entry: tarfile.TarInfo):
    name = entry.name
    if name == ".singularity.d" or name.startswith(".singularity.d/"):
        return None
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = "root"
    entry.mtime = LAYER_MTIME
    return entry


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    rootfs, out_path, ref = sys.argv[1], sys.argv[2], sys.argv[3]
    env = sys.argv[4:]
    with tempfile.TemporaryDirectory(prefix="oci-archive.") as work:
        layer_tar = os.path.join(work, "layer.tar")
        with tarfile.open(layer_tar, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(os.listdir(rootfs)):
                tar.add(os.path.join(rootfs, name), arcname=name, filter=normalise)
        diff_id = sha256_file(layer_tar)

        blobs = os.path.join(work, "layout", "blobs", "sha256")
        os.makedirs(blobs)
        layer_gz = os.path.join(work, "layer.tar.gz")
        with open(layer_tar, "rb") as raw, open(layer_gz, "wb") as packed:
            with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
                shutil.copyfileobj(raw, gz)
        layer_digest = sha256_file(layer_gz)
        shutil.move(layer_gz, os.path.join(blobs, layer_digest))

        def put_json(value) -> tuple[str, int]:
            data = json.dumps(value, indent=2, sort_keys=True).encode()
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(blobs, digest), "wb") as handle:
                handle.write(data)
            return digest, len(data)

        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Env": env,
                "Cmd": ["/usr/lib/rstudio-server/bin/rserver", "--server-daemonize", "0"],
                "ExposedPorts": {"8787/tcp": {}},
                "Labels": {
                    "org.opencontainers.image.title": "rstudio-standin",
                    "org.opencontainers.image.description":
                        "hpc-rstudio test image with an RStudio Server stand-in",
                },
            },
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "make-oci-archive.py"}],
        }
        config_digest, config_size = put_json(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + layer_digest,
                    "size": os.path.getsize(os.path.join(blobs, layer_digest)),
                }
            ],
        }
        manifest_digest, manifest_size = put_json(manifest)
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + manifest_digest,
                    "size": manifest_size,
                    "annotations": {"org.opencontainers.image.ref.name": ref},
                }
            ],
        }
        layout = os.path.join(work, "layout")
        with open(os.path.join(layout, "index.json"), "w") as handle:
            json.dump(index, handle, indent=2, sort_keys=True)
        with open(os.path.join(layout, "oci-layout"), "w") as handle:
            json.dump({"imageLayoutVersion": "1.0.0"}, handle)

        partial = out_path + ".partial"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in ["oci-layout", "index.json", "blobs"]:
                tar.add(os.path.join(layout, name), arcname=name, filter=normalise)
        os.replace(partial, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

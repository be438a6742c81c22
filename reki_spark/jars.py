"""Puts the jars Spark needs beyond its own into the pip pyspark's `jars/` folder: Delta Lake's, and
Hadoop's S3A connector (hadoop-aws at the Hadoop version Spark 3.5 ships, 3.3.4, with the AWS SDK
bundle it was built against) for s3a:// lakes. Every Spark process started from this environment
(sessions, spark-submit, a standalone master and worker) then finds them offline. Downloads go
through a per-user cache, so a fresh virtualenv needs no network."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import urllib.request
from pathlib import Path

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
CACHE_DIR = Path.home() / ".cache" / "reki" / "jars"


# hadoop-aws must match the hadoop-client jars inside pyspark (3.3.4 for Spark 3.5), and the SDK
# bundle the version hadoop-aws 3.3.4 declares.
HADOOP_AWS = [("org.apache.hadoop", "hadoop-aws", "3.3.4"), ("com.amazonaws", "aws-java-sdk-bundle", "1.12.262")]
MANAGED_PREFIXES = ("delta-", "hadoop-aws-", "aws-java-sdk-bundle-")


def delta_artifacts(version: str) -> list[tuple[str, str, str]]:
    """(group, artifact, version) of the jars Delta and S3A need beside Spark's own classpath."""
    return [("io.delta", "delta-spark_2.12", version), ("io.delta", "delta-storage", version), *HADOOP_AWS]


def spark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def installed_delta_jars() -> list[Path]:
    return sorted(spark_jars_dir().glob("delta-*.jar"))


def _managed_jars() -> list[Path]:
    return sorted(path for path in spark_jars_dir().glob("*.jar") if path.name.startswith(MANAGED_PREFIXES))


def _artifact_url(group: str, artifact: str, version: str, suffix: str = "") -> str:
    return f"{MAVEN_CENTRAL}/{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.jar{suffix}"


def _fetch_verified(group: str, artifact: str, version: str) -> Path:
    cached = CACHE_DIR / f"{artifact}-{version}.jar"
    if cached.exists():
        return cached
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(_artifact_url(group, artifact, version, ".sha1"), timeout=60) as resp:
        expected_sha1 = resp.read().decode().split()[0].strip()
    with urllib.request.urlopen(_artifact_url(group, artifact, version), timeout=900) as resp:
        payload = resp.read()
    actual_sha1 = hashlib.sha1(payload).hexdigest()
    if actual_sha1 != expected_sha1:
        raise RuntimeError(f"{artifact}-{version}.jar: sha1 {actual_sha1} != published {expected_sha1}")
    partial = cached.with_suffix(".part")
    partial.write_bytes(payload)
    partial.rename(cached)
    return cached


def install_delta_jars(version: str) -> list[Path]:
    """Idempotent: copies only what is missing; removes Delta and S3A jars of other versions."""
    target_dir = spark_jars_dir()
    wanted = {f"{artifact}-{ver}.jar": (group, artifact, ver) for group, artifact, ver in delta_artifacts(version)}
    for stale in _managed_jars():
        if stale.name not in wanted:
            stale.unlink()
    installed = []
    for name, coordinates in wanted.items():
        target = target_dir / name
        if not target.exists():
            shutil.copyfile(_fetch_verified(*coordinates), target)
        installed.append(target)
    return installed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", required=True, help="Delta Lake version, e.g. 3.3.3")
    args = parser.parse_args()
    for path in install_delta_jars(args.version):
        print(f"jar: {path}")


if __name__ == "__main__":
    main()

"""Device-only stand-in for boto3 (see ../README.md): importable, but every use says why it cannot work."""


def resource(*args, **kwargs):
    raise RuntimeError("boto3 shim (tools/device/perf/device_shims): S3 downloads are unavailable on the offline "
                       "device machine; carry the real boto3/botocore wheels to use them")


client = resource

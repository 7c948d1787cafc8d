"""Amazon EC2 through botocore (boto3's core): the only module that imports boto3 or
botocore (an import contract).

Credentials come only from botocore's own chain, the one boto3 uses (environment, shared
profile, instance role), read anew for each ``Ec2``; an endpoint from
``AWS_ENDPOINT_URL`` (botocore reads it itself), which is how the tests point it at a
moto server. botocore's data files (the EC2 model alone is megabytes of JSON, about
0.3 CPU-seconds to parse) are read once per process and shared by every session
(``_session``): a long-running process (the web app, the autoscaler) does not parse them
again for each action. Every call runs in botocore's standard retry mode with
a bounded number of attempts and timeouts, and its failures become one-line errors of
our tree: bad input (an unknown AMI, subnet or instance type) exits 2 and changed
nothing; a call whose outcome is unknown (a dropped connection, a read timeout after
the request left) is ``CloudUncertain``, which the caller settles by listing the
instances that carry the intent's tag.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

from clusterai_runner.errors import ClusterAIError, RunFailed, UsageError

# botocore's max_attempts counts retries; total_max_attempts counts attempts.
ATTEMPTS = 4
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
# Error codes that mean the request was wrong, not that the cloud failed.
BAD_INPUT = {
    "InvalidAMIID.Malformed": "cloud_ami",
    "InvalidAMIID.NotFound": "cloud_ami",
    "InvalidAMIID.Unavailable": "cloud_ami",
    "InvalidSubnetID.NotFound": "cloud_subnet_id",
    "InvalidSubnetID.Malformed": "cloud_subnet_id",
    "InvalidGroup.NotFound": "cloud_security_group_ids",
    "InvalidGroupId.Malformed": "cloud_security_group_ids",
    "InvalidKeyPair.NotFound": "cloud_key_name",
    "InvalidParameterValue": "a cloud_* variable",
    "Unsupported": "cloud_instance_types",
    "ParameterNotFound": "cloud_ami",
}
AUTH = {
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
}


class CloudUncertain(RunFailed):
    """A call that may or may not have reached the cloud (exit 1)."""


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str
    address: str | None
    instance_type: str
    launched_at: str | None
    tags: dict[str, str]

    @property
    def intent(self) -> str | None:
        return self.tags.get("clusterai:intent")


@dataclass(frozen=True)
class LaunchSpec:
    image_id: str
    instance_type: str
    subnet_id: str
    security_group_ids: tuple[str, ...]
    user_data: str
    tags: dict[str, str]
    client_token: str
    key_name: str | None = None
    spot: bool = False
    max_price: float | None = None


def _instance(raw: dict[str, Any]) -> Instance:
    launched = raw.get("LaunchTime")
    return Instance(
        instance_id=raw["InstanceId"],
        state=raw.get("State", {}).get("Name", "unknown"),
        address=raw.get("PrivateIpAddress"),
        instance_type=raw.get("InstanceType", ""),
        launched_at=launched.isoformat(timespec="seconds") if launched is not None else None,
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
    )


@contextmanager
def _calling(what: str) -> Iterator[None]:
    """Turn botocore's failures of ``what`` into our errors."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError as exc:
        raise UsageError(
            "AWS credentials",
            "none found in the environment, a profile or an instance role",
            "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ) from exc
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")).splitlines()[0] if error.get("Message") else code
        if code in AUTH:
            raise UsageError(
                f"AWS {what}",
                f"{code}: {message}",
                "check the credentials and the IAM policy (README)",
            ) from exc
        if code in BAD_INPUT or code.startswith("Invalid"):
            field = BAD_INPUT.get(code, "a cloud_* variable")
            raise UsageError(f"AWS {what}", f"{code}: {message}", f"check {field}") from exc
        raise RunFailed(f"AWS {what}", f"{code}: {message}", "try again later") from exc
    except (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError) as exc:
        raise CloudUncertain(
            f"AWS {what}",
            f"no answer ({exc.__class__.__name__})",
            "run `clusterai cloud reconcile`",
        ) from exc
    except botocore.exceptions.EndpointConnectionError as exc:
        raise RunFailed(
            f"AWS {what}",
            f"cannot reach {exc.kwargs.get('endpoint_url', 'EC2')}",
            "check the network and the region",
        ) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise RunFailed(f"AWS {what}", str(exc).splitlines()[0], "try again") from exc


@functools.cache
def _loader(data_path: str | None) -> Any:
    """botocore's loader of its data files for ``AWS_DATA_PATH``; it keeps what it read.
    Sharing it between sessions is what botocore's maintainers suggest (botocore#3078):
    what it holds is read-only."""
    return botocore.loaders.create_loader(data_path)


def _session() -> Any:
    """A new botocore session (its settings and credentials read now) with the process's
    shared loader."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader(session.get_config_variable("data_path")))
    return session


class Ec2:
    """The calls cloud burst makes, in one region."""

    def __init__(self, region: str, read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self._config = botocore.config.Config(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=read_timeout_s,
        )
        with _calling("session"):
            self._session = _session()
            self._ec2 = self._session.create_client("ec2", config=self._config)
        self._ssm_client: Any = None
        self.region = region

    @property
    def _ssm(self) -> Any:
        """SSM's client, made on first use (only an AMI given as a parameter needs it)."""
        if self._ssm_client is None:
            with _calling("session"):
                self._ssm_client = self._session.create_client("ssm", config=self._config)
        return self._ssm_client

    def check_credentials(self) -> None:
        """Raise UsageError when botocore's chain finds no credentials; no call is made."""
        if _session().get_credentials() is None:
            raise UsageError(
                "AWS credentials",
                "none found in the environment, a profile or an instance role",
                "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            )

    def resolve_image(self, parameter: str) -> str:
        """The AMI id an SSM public parameter names."""
        with _calling(f"GetParameter {parameter}"):
            answer = self._ssm.get_parameter(Name=parameter)
        value = str(answer["Parameter"]["Value"])
        if not value.startswith("ami-"):
            raise UsageError(
                "cloud_ami",
                f"SSM parameter {parameter} holds {value!r}, not an AMI id",
                "name a parameter that holds an AMI id",
            )
        return value

    def check_image(self, image_id: str) -> None:
        with _calling(f"DescribeImages {image_id}"):
            found = self._ec2.describe_images(ImageIds=[image_id])["Images"]
        if not found:
            raise UsageError(
                "cloud_ami",
                f"{image_id} does not exist in {self.region}",
                "name an AMI of this region",
            )

    def subnet_vpc(self, subnet_id: str) -> str:
        with _calling(f"DescribeSubnets {subnet_id}"):
            found = self._ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
        if not found:
            raise UsageError(
                "cloud_subnet_id",
                f"{subnet_id} does not exist in {self.region}",
                "name a subnet of this region",
            )
        return str(found[0]["VpcId"])

    def group_vpcs(self, group_ids: tuple[str, ...]) -> dict[str, str]:
        with _calling("DescribeSecurityGroups"):
            found = self._ec2.describe_security_groups(GroupIds=list(group_ids))["SecurityGroups"]
        return {g["GroupId"]: g["VpcId"] for g in found}

    def run(self, spec: LaunchSpec) -> Instance:
        """RunInstances for one instance; the same ``client_token`` never makes two."""
        arguments: dict[str, Any] = {
            "ImageId": spec.image_id,
            "InstanceType": spec.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": spec.client_token,
            "UserData": spec.user_data,
            "NetworkInterfaces": [
                {
                    "DeviceIndex": 0,
                    "SubnetId": spec.subnet_id,
                    "Groups": list(spec.security_group_ids),
                    "AssociatePublicIpAddress": False,
                }
            ],
            "TagSpecifications": [
                {
                    "ResourceType": kind,
                    "Tags": [{"Key": k, "Value": v} for k, v in spec.tags.items()],
                }
                for kind in ("instance", "volume")
            ],
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        }
        if spec.key_name:
            arguments["KeyName"] = spec.key_name
        if spec.spot:
            options: dict[str, Any] = {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if spec.max_price is not None:
                options["MaxPrice"] = f"{spec.max_price:.4f}"
            arguments["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        with _calling("RunInstances"):
            answer = self._ec2.run_instances(**arguments)
        return _instance(answer["Instances"][0])

    def tagged(self, cluster: str) -> list[Instance]:
        """Every instance that carries this cluster's tag, in any state."""
        instances: list[Instance] = []
        with _calling("DescribeInstances"):
            pages = self._ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "tag:clusterai:cluster", "Values": [cluster]}]
            )
            for page in pages:
                for reservation in page["Reservations"]:
                    instances.extend(_instance(raw) for raw in reservation["Instances"])
        return instances

    def describe(self, instance_id: str) -> Instance | None:
        with _calling(f"DescribeInstances {instance_id}"):
            try:
                answer = self._ec2.describe_instances(InstanceIds=[instance_id])
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidInstanceID.NotFound":
                    return None
                raise
        for reservation in answer["Reservations"]:
            for raw in reservation["Instances"]:
                return _instance(raw)
        return None

    def terminate(self, instance_ids: list[str]) -> None:
        if not instance_ids:
            return
        with _calling(f"TerminateInstances {', '.join(instance_ids)}"):
            try:
                self._ec2.terminate_instances(InstanceIds=instance_ids)
            except botocore.exceptions.ClientError as exc:
                # Already gone: what terminating wanted.
                if exc.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
                    raise


__all__ = ["CloudUncertain", "ClusterAIError", "Ec2", "Instance", "LaunchSpec"]

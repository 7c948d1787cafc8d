"""adapters/aws.py without a cloud: what each ``Ec2`` reads anew and what the process
shares. Making a client contacts nothing."""

from __future__ import annotations

import pytest

from clusterai_runner.adapters.aws import Ec2
from clusterai_runner.errors import UsageError


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DATA_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    # The chain's last link asks the instance metadata address: never from a unit test.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFIRST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    return monkeypatch


def test_sessions_share_botocore_data_but_read_credentials_and_endpoint_anew(
    credentials: pytest.MonkeyPatch,
) -> None:
    first = Ec2("eu-west-1")
    credentials.setenv("AWS_ACCESS_KEY_ID", "AKIASECOND")
    credentials.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    second = Ec2("us-east-1")
    # One loader, so the EC2 model is parsed once per process ...
    loader = first._session.get_component("data_loader")
    assert second._session.get_component("data_loader") is loader
    # ... and what each Ec2 is made with is read when it is made.
    assert first._ec2._request_signer._credentials.access_key == "AKIAFIRST"
    assert second._ec2._request_signer._credentials.access_key == "AKIASECOND"
    assert second._ec2.meta.endpoint_url == "http://127.0.0.1:9"
    assert first._ec2.meta.endpoint_url == "https://ec2.eu-west-1.amazonaws.com"
    assert second._ec2.meta.region_name == "us-east-1"


def test_ssm_is_made_only_when_asked_for(credentials: pytest.MonkeyPatch) -> None:
    ec2 = Ec2("eu-west-1")
    assert ec2._ssm_client is None
    assert ec2._ssm.meta.service_model.service_name == "ssm"
    assert ec2._ssm is ec2._ssm  # made once


def test_no_credentials_is_one_usage_error(credentials: pytest.MonkeyPatch) -> None:
    ec2 = Ec2("eu-west-1")
    credentials.delenv("AWS_ACCESS_KEY_ID")
    credentials.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UsageError, match="none found in the environment"):
        ec2.check_credentials()

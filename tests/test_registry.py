"""Loading models by spec: optional sources fail with one plain message."""
import pytest

from fineprune.errors import UnknownModelError
from fineprune.registry import load_model


def test_torchvision_models_fail_with_one_clear_message_when_unavailable():
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision imports here")
    except Exception:
        pass
    with pytest.raises(UnknownModelError, match="torchvision"):
        load_model("torchvision:resnet50")

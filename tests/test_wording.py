"""Messages users read, worded as the README words them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.settings import SettingsError
from bridge.worker.subscribers import load_subscribers


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ('events = ["*"]', "handler / forward_url: neither is set: set exactly one"),
        (
            'events = ["*"]\nhandler = "a.b:c"\nforward_url = "http://127.0.0.1:9/"',
            "handler / forward_url: both are set: set exactly one",
        ),
    ],
)
def test_handler_and_forward_url_wording(fields: str, said: str, tmp_path: Path) -> None:
    config = tmp_path / "subs.toml"
    config.write_text(f'[[subscriber]]\nname = "erp"\n{fields}\n')
    with pytest.raises(SettingsError) as raised:
        load_subscribers(str(config))
    assert said in str(raised.value)

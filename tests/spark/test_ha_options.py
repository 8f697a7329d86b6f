"""configure(ha_group=..., ha_ttl=...) is validated before any JVM or network call."""

from __future__ import annotations

import pytest

from spark_ext.exceptions import BadArgumentError
from spark_ext.spark.configure import validate_options


def test_ha_options_are_recorded() -> None:
    opts = validate_options(ha_group="orders", ha_ttl=2.5)
    assert (opts.ha_group, opts.ha_ttl) == ("orders", 2.5)
    assert validate_options(ha_group="orders").ha_ttl == 3.0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"ha_group": "orders", "ha_ttl": 0.1}, "ha_ttl=0.1"),
    ({"ha_group": "orders", "ha_ttl": True}, "ha_ttl=True"),
    ({"ha_group": "orders", "ha_ttl": "3"}, "ha_ttl='3'"),
    ({"ha_ttl": 3.0}, "needs ha_group"),
    ({"ha_group": "no spaces"}, "ha_group='no spaces'"),
])
def test_bad_ha_options_name_the_option_and_value(kwargs: dict, fragment: str) -> None:
    with pytest.raises(BadArgumentError, match=fragment.replace("(", r"\(")):
        validate_options(**kwargs)

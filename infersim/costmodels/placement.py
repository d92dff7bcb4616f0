"""Where a model runs: a device type, how many, split how, joined by which link."""

from __future__ import annotations

from dataclasses import dataclass

from infersim.errors import ConfigError
from infersim.hardware import DeviceSpec, LinkSpec, get_link


@dataclass(frozen=True)
class Placement:
    """One replica's devices: ``tp`` x ``pp`` ranks (experts split ``ep`` ways among the
    ``tp`` ranks); ``dp`` replicas are the simulator's business. ``link`` joins the ranks;
    it defaults to the device's scale-up link."""

    device: DeviceSpec
    tp: int = 1
    pp: int = 1
    ep: int = 1
    dp: int = 1
    link: LinkSpec | None = None

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "ep", "dp"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"placement.{name}", value, "must be an integer >= 1")
        if self.ep > 1 and self.tp % self.ep:
            raise ConfigError("placement.ep", self.ep, f"must divide tp ({self.tp})")
        if self.link is None and self.ranks > 1:
            name = self.device.scale_up_link or self.device.host_link
            if name is None:
                raise ConfigError("placement.link", None,
                                  f"{self.device.name} names no link; give one for tp/pp > 1")
            object.__setattr__(self, "link", get_link(name))

    @property
    def ranks(self) -> int:
        """Devices in one replica."""
        return self.tp * self.pp

    @property
    def devices(self) -> int:
        """Devices in all replicas."""
        return self.ranks * self.dp

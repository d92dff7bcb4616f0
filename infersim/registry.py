"""Policies registered by name (schedulers, routers, drafters, acceptance models, ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from infersim.errors import UnknownNameError

T = TypeVar("T")


class Registry(dict[str, T]):
    """A name -> policy mapping with a registering decorator and a lookup whose error
    lists the registered names."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(policy: T) -> T:
            self[name] = policy
            policy.name = name
            return policy

        return wrap

    def lookup(self, name: str) -> T:
        if name not in self:
            raise UnknownNameError(self.kind, name, self)
        return self[name]

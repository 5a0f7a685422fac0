"""What the FHIRPath compiler's parts hand each other: the closures and their static types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

Items = list[Any]
Step = Callable[[Items, Any], Items]  # (items, root resource) -> items
Types = tuple[str, ...] | None  # static type paths of a collection; None: unknown


class Evaluator(Protocol):
    def __call__(self, node: Any, resource: Any = None) -> Items: ...


class Compiled(NamedTuple):
    fn: Step
    types: Types
    boolean: bool = False  # the result is [] or [bool]


@dataclass(frozen=True)
class Scope:
    """Static context: the input's types, the root resource's type, predicate mode, and the
    types of ``%context`` (an invariant's context element; None where there is none)."""

    types: Types
    root_type: str | None
    in_predicate: bool = False
    context_types: Types = None

    def inner(self, types: Types) -> Scope:
        """The scope of a where()/select()/all() ... argument: ``$this`` is each input item."""
        return replace(self, types=types, in_predicate=True)


# compile_node's signature, for the modules it delegates to
NodeCompiler = Callable[[Any, Scope], Compiled]

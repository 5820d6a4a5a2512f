"""FLOPs and bytes of every operator a forward pass dispatches, attributed to modules.

One dispatch mode sees each operator once and records:

- FLOPs, using the formulas of :func:`infopt.flops.flop_counter_mode` (the
  registry of ``torch.utils.flop_counter`` plus the CPU/MPS attention kernels),
  with the same "decompose when there is no formula" rule, so the totals equal
  :func:`infopt.flops.count_flops` exactly;
- bytes, labelled **unfused eager bytes**: for each non-view operator, the
  distinct storage bytes of its tensor inputs (read) plus its outputs
  (written). A broadcast (stride-0) input counts only the elements it really
  holds. Every intermediate tensor is counted as written by its producer and
  read again by each consumer, as eager PyTorch does; caches and fusion can
  only lower the real DRAM traffic, so this is an upper bound on it.

Module attribution uses global forward hooks that keep a stack of qualified
module names (``layer1.0.conv1``, ``transformer.h.3.attn``); the same hooks
drive the profiler's module scopes in :mod:`infopt.analyze.profiling`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from infopt.flops import flop_counter_mode

#: Name given to the model's root module (PyTorch names it ""), chosen so it
#: can never collide with a submodule's attribute name.
ROOT_NAME = "<root>"

BYTES_DEFINITION = (
    "unfused eager bytes: per non-view operator, distinct storage bytes of tensor inputs read plus outputs "
    "written (broadcast inputs counted once); an upper bound on DRAM traffic"
)

aten = torch.ops.aten

# Metadata queries FlopCounterMode also ignores: they touch no tensor data.
_METADATA_OPS = {
    aten.sym_is_contiguous.default, aten.is_contiguous.default, aten.is_contiguous.memory_format,
    aten.is_strides_like_format.default, aten.is_non_overlapping_and_dense.default, aten.size.default,
    aten.sym_size.default, aten.stride.default, aten.sym_stride.default, aten.storage_offset.default,
    aten.sym_storage_offset.default, aten.numel.default, aten.sym_numel.default, aten.dim.default,
    torch.ops.prim.layout.default,
}
# Allocation without touching the memory: no traffic.
_ALLOCATION_ONLY = {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
                    "aten::new_empty_strided", "aten::resize_"}
# In-place operators that overwrite their destination without reading it.
_OVERWRITE_ONLY = {"aten::copy_", "aten::fill_", "aten::zero_", "aten::uniform_", "aten::normal_",
                   "aten::bernoulli_", "aten::random_", "aten::index_put_"}


def tensor_footprint_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor view refers to.

    Dimensions with stride 0 (broadcast by ``expand``) repeat the same memory,
    so they do not multiply the count. Capped at the storage's size.
    """
    if tensor.numel() == 0:
        return 0
    elements = 1
    for size, stride in zip(tensor.shape, tensor.stride()):
        if stride != 0:
            elements *= size
    footprint = elements * tensor.element_size()
    try:
        return min(footprint, tensor.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. some subclasses)
        return footprint


def _storage_pointer(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. some subclasses)
        return None


def _view_key(tensor: torch.Tensor) -> tuple:
    """Identity of a view: the same memory region seen twice is counted once."""
    pointer = _storage_pointer(tensor)
    return (id(tensor) if pointer is None else pointer), tensor.storage_offset(), tuple(tensor.shape), \
        tuple(tensor.stride())


def _is_view_op(func) -> bool:
    """True when every tensor the operator returns aliases an input without writing it."""
    returns = func._schema.returns
    if not returns:
        return False
    return all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def _written_arguments(func, args, kwargs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Tensors the operator mutates: ``(in_place_targets, out_arguments)``."""
    in_place, outs = [], []
    for index, argument in enumerate(func._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        if argument.kwarg_only:
            value = kwargs.get(argument.name)
        else:
            value = args[index] if index < len(args) else kwargs.get(argument.name)
        tensors = [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
        (outs if argument.kwarg_only else in_place).extend(tensors)
    return in_place, outs


def _unique_bytes(tensors) -> int:
    seen: set = set()
    total = 0
    for tensor in tensors:
        key = _view_key(tensor)
        if key not in seen:
            seen.add(key)
            total += tensor_footprint_bytes(tensor)
    return total


def operator_bytes(func, args, kwargs, out) -> tuple[int, int] | None:
    """``(read_bytes, written_bytes)`` of one operator call (unfused eager bytes).

    ``None`` when the call moves no data: allocation only, or every output
    merely aliases an input (a view the schema does not declare, such as
    ``aten::_unsafe_view``).
    """
    name = func._schema.name
    if name in _ALLOCATION_ONLY:
        return None
    in_place, out_args = _written_arguments(func, args, kwargs)
    written_ids = {id(t) for t in in_place + out_args}
    inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    input_storages = {_storage_pointer(t) for t in inputs} - {None}
    outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and id(t) not in written_ids]
    fresh_outputs = [t for t in outputs if _storage_pointer(t) not in input_storages]
    if not written_ids and outputs and not fresh_outputs:
        return None
    reads = [t for t in inputs if id(t) not in written_ids]
    if name not in _OVERWRITE_ONLY:
        reads += in_place  # an in-place update reads its destination, then writes it
    writes = in_place + out_args + fresh_outputs
    return _unique_bytes(reads), _unique_bytes(writes)


class ModuleScopes:
    """Global forward hooks that report entering and leaving each submodule of ``root``.

    Calls ``on_enter(name)`` / ``on_exit(name)`` with qualified names
    (``ROOT_NAME`` for the root). Only modules of ``root`` are reported, so
    other models running at the same time are ignored. The hooks are removed
    on exit, even after an exception.
    """

    def __init__(self, root: nn.Module, on_enter: Callable[[str], None], on_exit: Callable[[str], None]):
        self.names = {id(m): (name or ROOT_NAME) for name, m in root.named_modules()}
        self.on_enter, self.on_exit = on_enter, on_exit
        self._handles: list = []

    def _pre_hook(self, module, args):
        name = self.names.get(id(module))
        if name is not None:
            self.on_enter(name)

    def _post_hook(self, module, args, output):
        name = self.names.get(id(module))
        if name is not None:
            self.on_exit(name)

    def __enter__(self) -> "ModuleScopes":
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        try:
            self._handles.append(register_module_forward_pre_hook(self._pre_hook))
            self._handles.append(register_module_forward_hook(self._post_hook, always_call=True))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        while self._handles:
            self._handles.pop().remove()


def module_table_skeleton(root: nn.Module) -> pd.DataFrame:
    """One row per submodule: qualified name, type, depth and parent (root first)."""
    rows = []
    for name, module in root.named_modules():
        qualified = name or ROOT_NAME
        parent = ROOT_NAME if name and "." not in name else (name.rsplit(".", 1)[0] if name else None)
        rows.append({"module": qualified, "module_type": type(module).__name__,
                     "depth": 0 if not name else name.count(".") + 1, "parent": parent})
    return pd.DataFrame(rows)


def fill_uncalled_containers(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Give modules that never run themselves (``nn.ModuleList``/``ModuleDict`` containers) inclusive
    values equal to the sum of their direct children, bottom-up, so the hierarchy adds up."""
    uncalled = set(table.loc[table["calls"] == 0, "module"])
    if not uncalled:
        return table
    values = table.set_index("module")[columns].astype(float).copy()
    for depth in sorted(table["depth"].unique(), reverse=True):
        for name in table.loc[(table["depth"] == depth) & table["module"].isin(uncalled), "module"]:
            children = table.loc[table["parent"] == name, "module"]
            values.loc[name] = values.loc[list(children)].sum()
    for column in columns:
        table[column] = table["module"].map(values[column]).astype(table[column].dtype)
    return table


@dataclass
class OpRecord:
    """One operator call as the counting mode saw it."""

    operator: str           # schema name, e.g. "aten::addmm" (the profiler's name for it)
    module: str | None      # innermost module being run, or None outside any
    modules: tuple          # every module on the stack (for inclusive sums)
    flops: int
    read_bytes: int
    written_bytes: int


class OpCounterMode(TorchDispatchMode):
    """Dispatch mode recording FLOPs and unfused eager bytes of every operator call.

    Mirrors ``FlopCounterMode``: metadata queries are skipped and an operator
    with no FLOP formula is decomposed first if it can be, so the FLOP total
    matches :func:`infopt.flops.count_flops`.
    """

    def __init__(self, module_stack: list[str] | None = None):
        super().__init__()
        self.flop_registry = flop_counter_mode().flop_registry
        self.records: list[OpRecord] = []
        self.module_stack = module_stack if module_stack is not None else []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _METADATA_OPS:
            return NotImplemented
        if isinstance(func, torch._ops.HigherOrderOperator):
            return NotImplemented
        packet = func._overloadpacket
        if packet not in self.flop_registry and func is not torch.ops.prim.device.default:
            with self:
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        out = func(*args, **kwargs)
        if func is torch.ops.prim.device.default or _is_view_op(func):
            return out
        formula = self.flop_registry.get(packet)
        flops = int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0
        moved = operator_bytes(func, args, kwargs, out)
        if moved is None and not flops:
            return out
        read, written = moved or (0, 0)
        stack = tuple(dict.fromkeys(self.module_stack))  # a module re-entered counts once
        self.records.append(OpRecord(func._schema.name, stack[-1] if stack else None, stack,
                                     flops, read, written))
        return out


@dataclass
class OpCounts:
    """What one counted call dispatched, as tables.

    ``operators``: one row per operator name (calls, flops, read/written/total
    bytes). ``modules``: one row per submodule with inclusive
    (``flops``, ``bytes``) and self (``self_flops``, ``self_bytes``) sums and
    the number of times it ran (``calls``); ``None`` without a root module.
    """

    records: list[OpRecord]
    operators: pd.DataFrame
    modules: pd.DataFrame | None
    total_flops: int
    total_bytes: int
    bytes_definition: str = BYTES_DEFINITION
    module_calls: dict = field(default_factory=dict)


def _operator_table(records: list[OpRecord]) -> pd.DataFrame:
    columns = ["operator", "calls", "flops", "read_bytes", "written_bytes", "bytes"]
    if not records:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame([{"operator": r.operator, "flops": r.flops, "read_bytes": r.read_bytes,
                           "written_bytes": r.written_bytes} for r in records])
    table = frame.groupby("operator", sort=False).agg(
        calls=("flops", "size"), flops=("flops", "sum"), read_bytes=("read_bytes", "sum"),
        written_bytes=("written_bytes", "sum")).reset_index()
    table["bytes"] = table["read_bytes"] + table["written_bytes"]
    return table.sort_values(["flops", "bytes"], ascending=False, ignore_index=True)[columns]


def _module_table(root: nn.Module, records: list[OpRecord], calls: dict) -> pd.DataFrame:
    table = module_table_skeleton(root)
    inclusive_flops = dict.fromkeys(table["module"], 0)
    inclusive_bytes = dict.fromkeys(table["module"], 0)
    self_flops = dict.fromkeys(table["module"], 0)
    self_bytes = dict.fromkeys(table["module"], 0)
    for record in records:
        nbytes = record.read_bytes + record.written_bytes
        for name in record.modules:
            inclusive_flops[name] += record.flops
            inclusive_bytes[name] += nbytes
        if record.module is not None:
            self_flops[record.module] += record.flops
            self_bytes[record.module] += nbytes
    table["calls"] = table["module"].map(lambda n: calls.get(n, 0))
    table["flops"] = table["module"].map(inclusive_flops)
    table["self_flops"] = table["module"].map(self_flops)
    table["bytes"] = table["module"].map(inclusive_bytes)
    table["self_bytes"] = table["module"].map(self_bytes)
    return fill_uncalled_containers(table, ["flops", "bytes"])


@contextmanager
def _module_stack(root: nn.Module | None) -> Iterator[tuple[list[str], dict]]:
    stack: list[str] = []
    calls: dict[str, int] = {}
    if root is None:
        yield stack, calls
        return

    def enter(name: str) -> None:
        stack.append(name)
        calls[name] = calls.get(name, 0) + 1

    def leave(name: str) -> None:
        # Pop back to this module (robust if an inner module raised).
        while stack:
            if stack.pop() == name:
                break

    with ModuleScopes(root, enter, leave):
        yield stack, calls


def count_ops(fn: Callable[[], object], module: nn.Module | None = None) -> OpCounts:
    """Run ``fn()`` once under inference mode and count FLOPs and bytes per operator and module.

    Pass the ``nn.Module`` that ``fn`` runs as ``module`` to get the per-module table.
    """
    with _module_stack(module) as (stack, calls):
        mode = OpCounterMode(stack)
        with torch.inference_mode(), mode:
            fn()
    records = mode.records
    return OpCounts(
        records=records,
        operators=_operator_table(records),
        modules=_module_table(module, records, calls) if module is not None else None,
        total_flops=sum(r.flops for r in records),
        total_bytes=sum(r.read_bytes + r.written_bytes for r in records),
        module_calls=calls,
    )


def count_model(model, batch_size: int, seq_len: int | None = None) -> OpCounts:
    """:func:`count_ops` on one forward of a lab model at ``batch_size`` (and ``seq_len``)."""
    inputs = model.prepare_input(batch_size, seq_len)
    return count_ops(lambda: model.forward(inputs), module=model.module)

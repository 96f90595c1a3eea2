"""Whole checkpoints from pipeline stages: global rank 0 gathers every stage's weights and
optimizer state and writes the file one process writes (`net....` keys, one optimizer state
indexed as the whole net's); loading keeps each stage's entries. So a checkpoint moves between
trainer=pipeline (any number of stages) and a one-process run in both directions."""

from itertools import chain
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.utilities.apply_func import apply_to_collection

from dtrain.config.errors import ConfigError


class WholeCheckpoints:
    """Mixin for the Pipeline strategy: the state-dict hooks of Lightning's strategy, over the
    names of the whole net the strategy noted before it dropped the other stages' layers
    (`_stage_keys`, `_full_keys`, `_layouts`)."""

    def _gather_to_first(self, part: Any) -> list | None:
        """Every stage's `part` on the first rank of the first pipeline (global rank 0, which
        writes checkpoints), as a list by stage; None on every other rank. Tensors travel on the
        CPU: a transient whole copy, on one rank, while a checkpoint is saved."""
        if self.global_rank >= self.stages:  # another replica: rank 0 has the same from its own
            return None
        part = apply_to_collection(part, torch.Tensor, lambda t: t.detach().cpu())
        parts = [None] * self.stages if self.global_rank == 0 else None
        dist.gather_object(part, parts, dst=self._pp_ranks[0], group=self._pp_group)
        return parts

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The whole module's state dict on global rank 0 (this stage's on the other ranks)."""
        state = self.lightning_module.state_dict()
        if not self._stage_keys:
            return state
        mine = self._stage_keys[self.stage_index]
        own_stage = {key: value for key, value in state.items() if key in mine}
        parts = self._gather_to_first(state if self.global_rank == 0 else own_stage)
        if parts is None:
            return state
        merged = {key: value for part in parts for key, value in part.items()}
        return {key: merged[key] for key in self._full_keys if key in merged}

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        """A whole checkpoint into this stage: the other stages' entries are left out."""
        others = set().union(*(keys for index, keys in enumerate(self._stage_keys) if index != self.stage_index)) if self._stage_keys else set()
        state = {key: value for key, value in checkpoint["state_dict"].items() if key not in others}
        self.lightning_module.load_state_dict(state, strict=strict)

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        """One optimizer state for the whole net on global rank 0, as a single process's optimizer
        over the whole net would save it: states and groups indexed in the whole net's order."""
        state = optimizer.state_dict()
        if not self._layouts:
            return state
        layout = self._layouts[self.optimizers.index(optimizer)]
        names = self._param_names()
        stage_names = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        by_name = {stage_names[index]: value for index, value in state["state"].items()}
        parts = self._gather_to_first(by_name)
        if parts is None:
            return state
        merged = {name: value for part in parts for name, value in part.items()}
        whole, groups, start = {}, [], 0
        for group, group_names in zip(state["param_groups"], layout):
            indices = list(range(start, start + len(group_names)))
            whole.update({i: merged[name] for i, name in zip(indices, group_names) if name in merged})
            groups.append({**group, "params": indices})
            start += len(group_names)
        return {**state, "state": whole, "param_groups": groups}

    def load_optimizer_state_dict(self, checkpoint) -> None:
        """Whole optimizer states (this strategy's or a single process's) into the stage's."""
        if self._layouts:
            checkpoint = {**checkpoint, "optimizer_states": [
                self._stage_optimizer_state(optimizer, layout, whole)
                for optimizer, layout, whole in zip(self.optimizers, self._layouts, checkpoint["optimizer_states"])
            ]}
        super().load_optimizer_state_dict(checkpoint)

    def _stage_optimizer_state(self, optimizer, layout: list[list[str]], whole: dict) -> dict:
        if [len(group["params"]) for group in whole["param_groups"]] != [len(names) for names in layout]:
            raise ConfigError("resume", "the checkpoint's optimizer has other parameter groups than this run's (another model or optimizer?)")
        index_of = {name: i for i, name in enumerate(chain(*layout))}
        names = self._param_names()
        state, groups, position = {}, [], 0
        for group, whole_group in zip(optimizer.param_groups, whole["param_groups"]):
            ids = []
            for p in group["params"]:
                i = index_of[names[id(p)]]
                if i in whole["state"]:
                    state[position] = whole["state"][i]
                ids.append(position)
                position += 1
            groups.append({**whole_group, "params": ids})
        return {"state": state, "param_groups": groups}

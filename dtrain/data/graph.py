"""Graphs: node classification on KarateClub or a generated stochastic-block-model graph, and
graph classification on generated graphs. Everything is built in memory; nothing is downloaded."""

import numpy as np
import torch
from torch.utils.data import Dataset

from dtrain.config.errors import ConfigError
from dtrain.data.base import DataModule
from dtrain.data.splits import split_indices
from dtrain.extras import require

DATASETS = ("karate", "sbm", "sbm_graphs")


class _Repeat(Dataset):
    """One graph offered `times` times: full-graph node classification, with several steps per
    epoch so that Lightning's per-epoch work (validation, checkpoints) is not paid every step."""

    def __init__(self, graph, times: int = 1):
        self.graph, self.times = graph, times

    def __len__(self) -> int:
        return self.times

    def __getitem__(self, i: int):
        return self.graph


def sbm_graph(block_sizes: list[int], p_in: float, p_out: float, num_features: int, noise: float, generator: torch.Generator):
    """A stochastic-block-model graph whose node label is its block; features are the block's
    random centre plus noise strong enough that a node alone is often misread, so the
    neighbourhood has to help."""
    from torch_geometric.data import Data
    from torch_geometric.utils import stochastic_blockmodel_graph

    k = len(block_sizes)
    probs = torch.full((k, k), p_out) + torch.eye(k) * (p_in - p_out)
    # stochastic_blockmodel_graph draws from the global RNG; fork it so the graph depends on `generator` only.
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        edge_index = stochastic_blockmodel_graph(block_sizes, probs)
    y = torch.repeat_interleave(torch.arange(k), torch.tensor(block_sizes))
    centres = torch.randn(k, num_features, generator=generator)
    x = centres[y] + noise * torch.randn(len(y), num_features, generator=generator)
    return Data(x=x, edge_index=edge_index, y=y)


class GraphDataModule(DataModule):
    """`karate`: Zachary's karate club (34 members, 4 communities; torch_geometric builds it in).
    `sbm`: one generated graph of `num_blocks` communities. For both, nodes are split (stratified,
    fixed by `split_seed`) into train/val/test and each step sees the whole graph with a mask
    (`steps_per_epoch` steps make one training epoch).
    `sbm_graphs`: `num_graphs` generated graphs labelled by how many communities they have."""

    def __init__(
        self,
        dataset: str = "karate",
        batch_size: int = 1,
        val_fraction: float = 0.2,
        test_fraction: float = 0.3,
        split_seed: int = 0,
        num_blocks: int = 4,
        block_size: int = 100,
        p_in: float = 0.1,
        p_out: float = 0.01,
        num_features: int = 16,
        noise: float = 2.0,
        num_graphs: int = 600,
        steps_per_epoch: int = 25,
        **shared,
    ):
        super().__init__(batch_size, val_fraction=val_fraction, test_fraction=test_fraction, **shared)
        require("graph", "torch_geometric", "data=graph")
        if dataset not in DATASETS:
            raise ConfigError("data.dataset", f"unknown graph dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        if dataset != "sbm_graphs" and batch_size != 1:
            raise ConfigError("data.batch_size", f"{dataset} is one graph trained whole; use data.batch_size=1")
        self.dataset, self.split_seed = dataset, split_seed
        self.num_blocks, self.block_size, self.p_in, self.p_out = num_blocks, block_size, p_in, p_out
        self.num_features, self.noise, self.num_graphs = num_features, noise, num_graphs
        self.steps_per_epoch = steps_per_epoch
        self._graphs = None

    @property
    def level(self) -> str:
        return "graph" if self.dataset == "sbm_graphs" else "node"

    def _load(self):
        if self._graphs is None:
            generator = torch.Generator().manual_seed(self.split_seed)
            if self.dataset == "karate":
                from torch_geometric.datasets import KarateClub

                self._graphs = [KarateClub()[0]]
            elif self.dataset == "sbm":
                sizes = [self.block_size] * self.num_blocks
                self._graphs = [sbm_graph(sizes, self.p_in, self.p_out, self.num_features, self.noise, generator)]
            else:
                self._graphs = [self._community_count_graph(i % 3, generator) for i in range(self.num_graphs)]
        return self._graphs

    def _community_count_graph(self, label: int, generator: torch.Generator):
        from torch_geometric.data import Data

        n = int(torch.randint(30, 50, (1,), generator=generator))
        blocks = [1, 2, 4][label]
        sizes = [n // blocks] * (blocks - 1) + [n - (n // blocks) * (blocks - 1)]
        graph = sbm_graph(sizes, 0.3, 0.02, 1, 0.0, generator)
        return Data(x=torch.ones(n, 1), edge_index=graph.edge_index, y=torch.tensor([label]))

    @property
    def shapes(self) -> dict[str, int]:
        graphs = self._load()
        num_classes = 3 if self.level == "graph" else int(graphs[0].y.max()) + 1
        return {"num_features": graphs[0].num_node_features, "num_classes": num_classes, "num_outputs": num_classes}

    def collate_fn(self, items):
        from torch_geometric.data import Batch

        return items[0] if self.level == "node" else Batch.from_data_list(items)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        graphs = self._load()
        if self.level == "graph":
            labels = np.array([int(g.y) for g in graphs])
            splits = split_indices(len(graphs), self.val_fraction, self.test_fraction, labels=labels, seed=self.split_seed)
            self.train_set, self.val_set, self.test_set = ([graphs[i] for i in split] for split in splits)
            return
        graph = graphs[0]
        splits = split_indices(graph.num_nodes, self.val_fraction, self.test_fraction, labels=graph.y.numpy(), seed=self.split_seed)
        sets = []
        for split, times in zip(splits, (self.steps_per_epoch, 1, 1)):
            masked = graph.clone()
            masked.mask = torch.zeros(graph.num_nodes, dtype=torch.bool)
            masked.mask[torch.as_tensor(split)] = True
            sets.append(_Repeat(masked, times))
        self.train_set, self.val_set, self.test_set = sets

"""A run interrupted mid-epoch and resumed from last.ckpt sees exactly the batches of an
uninterrupted run (ResumableLoader), so it ends with identical weights; under several ranks each
sees a disjoint share of every epoch."""

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import TensorDataset

from plad.data.loader import ResumableLoader


class Regress(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, i):
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x).squeeze(-1), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


class Data(L.LightningDataModule):
    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(40, 4, generator=g)
        return ResumableLoader(TensorDataset(x, x.sum(-1) + torch.arange(40.0)), batch_size=8, seed=3)


def _fit(root: Path, max_steps: int, ckpt_path=None) -> Regress:
    torch.manual_seed(0)
    model = Regress()
    cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=False,
        callbacks=[cb],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, Data(), ckpt_path=ckpt_path)
    return model


def test_epoch_shuffle_differs_per_epoch_and_is_seeded():
    loader = ResumableLoader(list(range(10)), batch_size=10, seed=1)
    e0, e1 = [b.tolist() for b in list(loader) + list(loader)]
    assert sorted(e0) == list(range(10)) and e0 != e1
    assert next(iter(ResumableLoader(list(range(10)), batch_size=10, seed=1))).tolist() == e0


def test_resume_mid_epoch_matches_uninterrupted(tmp_path: Path):
    full = _fit(tmp_path / "a", max_steps=13)  # 5 batches per epoch: stops in the 3rd epoch
    _fit(tmp_path / "b", max_steps=7)  # "killed" mid 2nd epoch
    resumed = _fit(tmp_path / "b", max_steps=13, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_ranks_see_disjoint_shares_of_every_epoch_and_resume_mid_epoch():
    """Two ranks: each epoch's permutation split into equal, disjoint shares covering every row
    (padded by wrapping, as DistributedSampler does), reshuffled per epoch; a rank resumed from its
    state continues exactly where it stopped."""
    data = list(range(11))
    loaders = [ResumableLoader(data, batch_size=2, seed=4, rank=r, world=2) for r in range(2)]
    epochs = [[[x for b in loader for x in b.tolist()] for _ in range(2)] for loader in loaders]
    for e in range(2):
        a, b = epochs[0][e], epochs[1][e]
        assert len(a) == len(b) == 6 and set(a) | set(b) == set(data)
        assert len(set(a) & set(b)) == 1  # only the one wrapped row repeats
        single = next(iter(ResumableLoader(data, batch_size=11, seed=4)))  # epoch 0 of one process
        if e == 0:
            assert [single.tolist()[i] for i in range(0, 11, 2)] == a
    assert epochs[0][0] != epochs[0][1]

    cut = ResumableLoader(data, batch_size=2, seed=4, rank=1, world=2)
    it = iter(cut)
    first = [next(it).tolist()]
    state = cut.state_dict()
    resumed = ResumableLoader(data, batch_size=2, seed=4, rank=1, world=2)
    resumed.load_state_dict(state)
    assert first + [b.tolist() for b in resumed] == [
        b.tolist() for b in ResumableLoader(data, batch_size=2, seed=4, rank=1, world=2)
    ]

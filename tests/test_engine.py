import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cpmc_lib.engine import fit, poly_lr
from cpmc_lib.runtime import pick_device, seed_everything


def _toy(seed=0):
    seed_everything(seed)
    x = torch.randn(64, 4)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) > 0).float()
    ds = TensorDataset(x, y)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return ds, model, opt


def _train(ckpt, epochs, total_epochs=4):
    ds, model, opt = _toy()
    sched = poly_lr(opt, total_steps=total_epochs * 8)

    def make_loader(gen):
        return DataLoader(ds, batch_size=8, shuffle=True, generator=gen)

    def step(m, batch):
        x, y = batch
        return {"loss": torch.nn.functional.binary_cross_entropy_with_logits(m(x).squeeze(1), y)}

    hist = fit(
        model,
        make_loader,
        step,
        opt,
        epochs,
        ckpt,
        seed=3,
        device=torch.device("cpu"),
        scheduler=sched,
        progress=False,
        grad_clip=1.0,
    )
    return model, hist


def test_interrupted_training_resumes_to_same_weights(tmp_path):
    full, hist_full = _train(tmp_path / "a.pt", 4)
    _train(tmp_path / "b.pt", 2)  # "killed" after two epochs: only the checkpoint survives
    resumed, hist_resumed = _train(tmp_path / "b.pt", 4)
    for p, q in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [h["loss"] for h in hist_full] == [h["loss"] for h in hist_resumed]
    assert hist_full[-1]["loss"] < hist_full[0]["loss"]


def test_same_seed_same_numbers_other_seed_differs(tmp_path):
    a, _ = _train(tmp_path / "a.pt", 2)
    b, _ = _train(tmp_path / "b.pt", 2)
    torch.testing.assert_close(a[0].weight, b[0].weight, rtol=0, atol=0)
    seed_everything(0)
    x1 = torch.rand(3)
    seed_everything(1)
    assert not torch.equal(x1, torch.rand(3))


def test_nan_loss_is_a_clear_error(tmp_path):
    ds, model, opt = _toy()
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(
            model,
            lambda g: DataLoader(ds, batch_size=8),
            lambda m, b: {"loss": m(b[0]).sum() * float("nan")},
            opt,
            1,
            tmp_path / "c.pt",
            seed=0,
            device=torch.device("cpu"),
            progress=False,
        )


def test_pick_device(monkeypatch):
    monkeypatch.delenv("CPMC_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    monkeypatch.setenv("CPMC_DEVICE", "cpu")
    assert pick_device("auto").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")


@pytest.mark.parametrize("progress", [False, True])
def test_each_epoch_iterates_its_loader_once(tmp_path, progress):
    """One iterator per epoch: a second one (tqdm.auto calls iter() on what it wraps) would start
    another set of DataLoader workers that nothing reads."""
    ds, model, opt = _toy()
    calls = []

    class CountingLoader(DataLoader):
        def __iter__(self):
            calls.append(1)
            return super().__iter__()

    def step(m, batch):
        x, y = batch
        return {"loss": torch.nn.functional.binary_cross_entropy_with_logits(m(x).squeeze(1), y)}

    make_loader = lambda gen: CountingLoader(ds, batch_size=8, shuffle=True, generator=gen)  # noqa: E731
    fit(
        model,
        make_loader,
        step,
        opt,
        3,
        tmp_path / "c.pt",
        seed=0,
        device=torch.device("cpu"),
        progress=progress,
    )
    assert len(calls) == 3


def test_cuda_loader_options_and_channels_last_on_cpu():
    from cpmc_lib.runtime import channels_last, loader_options, to_device

    assert loader_options(torch.device("cpu"), 1) == {"num_workers": 1}  # pinning needs a GPU
    assert loader_options(torch.device("cuda"), 2) == {"num_workers": 2, "pin_memory": True}
    img = torch.randn(2, 3, 4, 4)
    moved = to_device(img, torch.device("cpu"))
    assert moved.is_contiguous(memory_format=torch.channels_last) and torch.equal(moved, img)
    conv = channels_last(torch.nn.Conv2d(3, 4, 3), "cpu")
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_are_channels_last():
    from cpmc_lib.runtime import to_device

    out = to_device(torch.randn(2, 3, 4, 4).pin_memory(), torch.device("cuda"))
    assert out.is_cuda and out.is_contiguous(memory_format=torch.channels_last)

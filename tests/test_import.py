"""Bring your own checkpoint: other libraries' conv4s, imported without hand-written renames,
compute what they computed in their own code.

Each peer network below is rebuilt the way its library builds it (module tree, layer order,
strides, padding, pooling, BatchNorm arguments; read from their sources, see
repsim/importing.py), so its state dict has that library's names and its forward pass is the
independent truth the imported model is checked against. Finn et al.'s TensorFlow network is
rebuilt in NumPy, NHWC, with TF's "SAME" padding.
"""

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repsim.checkpoint import load_checkpoint
from repsim.cli import main as cli
from repsim.errors import RepsimError
from repsim.importing import detect_layout, import_weights
from repsim.probe import probe_layers


# peers -----------------------------------------------------------------------------------
class L2LBlock(nn.Module):
    """learn2learn's ConvBlock: registers max_pool, normalize, relu, conv in that order;
    conv -> BatchNorm (affine, tracking running stats) -> ReLU -> optional 2x2 max-pool."""

    def __init__(self, cin, cout, max_pool):
        super().__init__()
        if max_pool:
            self.max_pool = nn.MaxPool2d(2, 2, ceil_mode=False)
        else:
            self.max_pool = lambda x: x  # noqa: E731 (a plain function, not a module: no key)
        self.normalize = nn.BatchNorm2d(cout, affine=True)
        nn.init.uniform_(self.normalize.weight)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, 3, stride=1 if max_pool else 2, padding=1, bias=True)

    def forward(self, x):
        return self.max_pool(self.relu(self.normalize(self.conv(x))))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class L2LOmniglotCNN(nn.Module):
    """learn2learn's OmniglotCNN: the body registered twice (``base`` and ``features[1]``)."""

    def __init__(self, ways, hidden=64):
        super().__init__()
        self.base = nn.Sequential(*[L2LBlock(1 if i == 0 else hidden, hidden, False) for i in range(4)])
        self.features = nn.Sequential(Lambda(lambda x: x.view(-1, 1, 28, 28)), self.base,
                                      Lambda(lambda x: x.mean(dim=[2, 3])), nn.Flatten())
        self.classifier = nn.Linear(hidden, ways)
        self.classifier.weight.data.normal_()
        self.classifier.bias.data.mul_(0.0)

    def forward(self, x):
        return self.classifier(self.features(x))


class L2LCNN4(nn.Module):
    """learn2learn's CNN4 (MiniImageNet): max-pooling blocks, features flattened (c, h, w)."""

    def __init__(self, ways, hidden=64):
        super().__init__()
        self.features = nn.Sequential(*[L2LBlock(3 if i == 0 else hidden, hidden, True) for i in range(4)])
        self.classifier = nn.Linear(25 * hidden, ways)

    def forward(self, x):
        return self.classifier(self.features(x).reshape(x.size(0), -1))


class TorchmetaCNN(nn.Module):
    """torchmeta's examples/maml ConvolutionalNeuralNetwork: unnamed Sequential blocks of
    conv (padding 1), BatchNorm on batch statistics, ReLU, 2x2 max-pool."""

    def __init__(self, cin, ways, hidden=64):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1),
                                 nn.BatchNorm2d(o, momentum=1.0, track_running_stats=False),
                                 nn.ReLU(), nn.MaxPool2d(2))
        self.features = nn.Sequential(*[block(cin if i == 0 else hidden, hidden) for i in range(4)])
        self.classifier = nn.Linear(hidden, ways)

    def forward(self, x):
        return self.classifier(self.features(x).view(x.size(0), -1))


class PytorchMamlConv(nn.Module):
    """pytorch-maml's MetaConvModel: named blocks layer1..layer4 (conv, norm, relu, pool)."""

    def __init__(self, cin, ways, hidden=64, feature_size=64):
        super().__init__()

        def block(i, o):
            return nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(i, o, 3, stride=1, padding=1, bias=True)),
                ("norm", nn.BatchNorm2d(o, momentum=1.0, track_running_stats=False)),
                ("relu", nn.ReLU()), ("pool", nn.MaxPool2d(2))]))
        self.features = nn.Sequential(OrderedDict(
            [(f"layer{i + 1}", block(cin if i == 0 else hidden, hidden)) for i in range(4)]))
        self.classifier = nn.Linear(feature_size, ways)

    def forward(self, x):
        return self.classifier(self.features(x).view(x.size(0), -1))


def stir_batchnorm(model, seed=0):
    """BatchNorm scales and offsets away from 1 and 0, so a layout that loses or swaps them fails."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.3
            if m.running_mean is not None:  # tracked, never used in training mode
                m.running_mean.data.normal_(generator=gen)
    return model


def imported_logits(tmp_path, peer, x, *args):
    """The imported model's logits on repsim's images ``x`` (ink 1 on 0) and the peer's on the
    same images as its library feeds them: torchmeta's Omniglot helper reads the PNGs with
    ToTensor, ink 0 on 1."""
    torch.save(peer.state_dict(), tmp_path / "peer.pt")
    out = tmp_path / "imported.safetensors"
    assert cli(["import", str(tmp_path / "peer.pt"), "--out", str(out), *args]) == 0
    ckpt = load_checkpoint(out)
    model = ckpt.build_model().double()
    theirs_x = 1 - x if ckpt.config.image_ink == "dark" else x
    with torch.no_grad():
        return model(x), peer.double().train()(theirs_x)


@pytest.mark.parametrize("make, shape, layout", [
    (lambda: L2LOmniglotCNN(5), (10, 1, 28, 28), "learn2learn"),
    (lambda: L2LCNN4(5, hidden=16), (10, 3, 84, 84), "learn2learn"),
    (lambda: TorchmetaCNN(1, 5), (10, 1, 28, 28), "torchmeta"),
    (lambda: TorchmetaCNN(1, 20, hidden=32), (40, 1, 28, 28), "torchmeta"),
    (lambda: PytorchMamlConv(1, 5), (10, 1, 28, 28), "pytorch-maml"),
    (lambda: PytorchMamlConv(3, 5, hidden=8, feature_size=200), (10, 3, 84, 84), "pytorch-maml"),
])
def test_peer_conv4_imports_with_its_own_logits(tmp_path, capsys, make, shape, layout):
    torch.manual_seed(0)
    peer = stir_batchnorm(make())
    x = torch.rand(shape, dtype=torch.float64)
    ours, theirs = imported_logits(tmp_path, peer, x)
    assert f"layout: {layout}" in capsys.readouterr().out
    assert (ours - theirs).abs().max() < 1e-5
    assert theirs.std() > 0.1  # the check compares numbers that vary, not constants


def test_importing_torchmeta_as_repsims_conv4_would_compute_another_network(tmp_path):
    """The silent failure of before: torchmeta's names mapped onto the stride-2 conv4 load,
    and compute something else (the layout's max-pooling is what makes them agree)."""
    torch.manual_seed(0)
    peer = stir_batchnorm(TorchmetaCNN(1, 5))
    x = torch.rand(10, 1, 28, 28, dtype=torch.float64)
    ours, theirs = imported_logits(tmp_path, peer, x, "--set", "pooling=stride", "--set", "feature_pooling=mean")
    assert (ours - theirs).abs().max() > 0.1


def test_check_logits_accepts_the_original_and_refuses_a_wrong_architecture(tmp_path, capsys):
    torch.manual_seed(1)
    peer = stir_batchnorm(TorchmetaCNN(1, 5))
    x = torch.rand(10, 1, 28, 28)
    torch.save(peer.state_dict(), tmp_path / "peer.pt")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(peer.train()(x), tmp_path / "logits.pt")
    check = ["--check-logits", str(tmp_path / "x.pt"), str(tmp_path / "logits.pt")]
    assert cli(["import", str(tmp_path / "peer.pt"), "--out", str(tmp_path / "a.safetensors"), *check]) == 0
    assert "logits match" in capsys.readouterr().out
    code = cli(["import", str(tmp_path / "peer.pt"), "--out", str(tmp_path / "b.safetensors"),
                "--set", "pooling=stride", "--set", "feature_pooling=mean", *check])
    assert code == 2 and "nothing written" in capsys.readouterr().err
    assert not (tmp_path / "b.safetensors").exists()


# Finn et al.'s TensorFlow network, in NumPy --------------------------------------------------
def tf_same_conv(x, kernel, bias, stride):
    """tf.nn.conv2d(x, kernel, [1, s, s, 1], 'SAME') + bias on NHWC arrays: output size
    ceil(in / s), the padding's odd pixel at the end."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - w, 0)
    x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((n, out_h, out_w, kernel.shape[3]))
    for i in range(k):
        for j in range(k):
            patch = x[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
            out += patch @ kernel[i, j]
    return out + bias


def finn_forward(weights, x, max_pool):
    """Finn et al.'s forward (utils.conv_block, maml.forward_conv): conv, batch_norm with
    TF's defaults (batch statistics, no scale, epsilon 1e-3) and ReLU, then 2x2 max-pool
    (MiniImageNet) or stride 2 (Omniglot); features averaged (Omniglot) or flattened NHWC."""
    h = x
    for i in range(4):
        h = tf_same_conv(h, weights[f"conv{i + 1}"], weights[f"b{i + 1}"], 1 if max_pool else 2)
        mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
        h = np.maximum((h - mean) / np.sqrt(var + 1e-3) + weights[f"{i}/beta"], 0)
        if max_pool:
            n, hh, ww, c = h.shape
            h = h[:, :hh // 2 * 2, :ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
    features = h.reshape(h.shape[0], -1) if max_pool else h.mean(axis=(1, 2))
    return features @ weights["w5"] + weights["b5"]


def finn_weights(channels, filters, ways, features, seed=0):
    rng = np.random.default_rng(seed)
    w = {}
    for i in range(4):
        w[f"conv{i + 1}"] = rng.normal(0, 0.3, (3, 3, channels if i == 0 else filters, filters))
        w[f"b{i + 1}"] = rng.normal(0, 0.1, filters)
        w[f"{i}/beta"] = rng.normal(0, 0.3, filters)
    w["w5"], w["b5"] = rng.normal(0, 1, (features, ways)), rng.normal(0, 0.1, ways)
    return w


@pytest.mark.parametrize("channels, filters, size, max_pool", [(1, 16, 28, False), (3, 8, 84, True)])
def test_finn_tensorflow_arrays_import_with_their_logits(tmp_path, channels, filters, size, max_pool):
    features = filters * 25 if max_pool else filters
    weights = finn_weights(channels, filters, 5, features)
    x = np.random.default_rng(1).random((10, size, size, channels))
    # TF's variable names, as a Saver's reader lists them
    np.savez(tmp_path / "finn.npz", **{f"model/{k}": v for k, v in weights.items()})
    out = tmp_path / "finn.safetensors"
    assert cli(["import", str(tmp_path / "finn.npz"), "--out", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.config.batchnorm_scale is False and ckpt.config.conv_padding == "same"
    model = ckpt.build_model().double()
    with torch.no_grad():
        ours = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    theirs = finn_forward(weights, x, max_pool)
    assert np.abs(ours - theirs).max() < 1e-5 and theirs.std() > 0.1


def test_finn_arrays_without_batchnorm_offsets_are_refused(tmp_path):
    weights = {k: v for k, v in finn_weights(1, 8, 5, 8).items() if "beta" not in k}
    np.savez(tmp_path / "finn.npz", **weights)
    with pytest.raises(RepsimError, match="no BatchNorm offset 0/beta.*export the variables"):
        import_weights(tmp_path / "finn.npz", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("change, needle", [
    (lambda w: {**w, "w5": w["w5"].T}, "w5 has 5 rows, neither conv4's 8 channels"),
    (lambda w: {**w, "w5": w["w5"].reshape(-1)}, r"w5 has shape \(40,\), not 2 axes"),
    (lambda w: {**w, "conv1": w["conv1"][0]}, r"conv1 has shape \(3, 1, 8\), not 4 axes"),
])
def test_finn_arrays_of_the_wrong_shape_are_refused_in_one_line(tmp_path, change, needle):
    np.savez(tmp_path / "finn.npz", **change(finn_weights(1, 8, 5, 8)))
    with pytest.raises(RepsimError, match=needle):
        import_weights(tmp_path / "finn.npz", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_a_tensor_of_the_wrong_rank_under_a_layers_name_is_refused(tmp_path):
    state = TorchmetaCNN(1, 5).state_dict()
    state["features.0.0.weight"] = state["features.0.0.weight"].reshape(-1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(RepsimError, match=r"conv1.conv.weight has shape \(576,\), not a convolution kernel"):
        import_weights(tmp_path / "w.pt", tmp_path / "x.safetensors")


@pytest.mark.parametrize("shape", [(10, 3, 28, 28), (10, 1, 84, 84), (1, 28, 28)])
def test_check_logits_on_inputs_of_another_shape_is_one_line(tmp_path, capsys, shape):
    torch.save(stir_batchnorm(TorchmetaCNN(1, 5)).state_dict(), tmp_path / "peer.pt")
    torch.save(torch.rand(*shape), tmp_path / "x.pt")
    torch.save(torch.zeros(10, 5), tmp_path / "logits.pt")
    code = cli(["import", str(tmp_path / "peer.pt"), "--out", str(tmp_path / "a.safetensors"),
                "--check-logits", str(tmp_path / "x.pt"), str(tmp_path / "logits.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot run on" in err[0] and "(N, 1, H, W)" in err[0]
    assert not (tmp_path / "a.safetensors").exists()


# detection, renames, names ----------------------------------------------------------------
def test_unknown_names_get_advice_to_map_them():
    with pytest.raises(RepsimError, match="no known layout.*--layout.*--rename REGEX=REPLACEMENT"):
        detect_layout({"encoder.0.weight", "fc.weight"})


def test_regex_renames_and_drop_map_any_other_naming(tmp_path):
    """A conv4 in repsim's architecture under names of its own: mapped by two regexes, an
    extra tensor dropped, and the logits are the original's."""
    torch.manual_seed(2)
    peer = stir_batchnorm(L2LOmniglotCNN(5))
    state = {k.replace("base.", "body.layer_").replace("normalize", "norm"): v
             for k, v in peer.state_dict().items() if not k.startswith("features.")}
    state["ema_decay"] = torch.tensor(0.99)
    torch.save(state, tmp_path / "mine.pt")
    renames = [(r"body\.layer_(\d)\.", r"base.\1."), (r"\.norm\.", ".normalize.")]
    r = import_weights(tmp_path / "mine.pt", tmp_path / "mine.safetensors", renames=renames, drop=r"^ema_")
    assert r.layout == "learn2learn" and r.name == "mine"
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        ours = load_checkpoint(r.path).build_model().double()(x)
        assert (ours - peer.double().train()(x)).abs().max() < 1e-5


def test_two_imported_models_of_one_algorithm_and_seed_are_two_rows(tmp_path, omniglot_root, capsys):
    """The issue's end-to-end: a learn2learn and a torchmeta conv4, both MAML seed 0, from file
    to report in three commands each side, analysed together as two models."""
    torch.manual_seed(0)
    torch.save(stir_batchnorm(L2LOmniglotCNN(5)).state_dict(), tmp_path / "l2l.pt")
    torch.save(stir_batchnorm(TorchmetaCNN(1, 5)).state_dict(), tmp_path / "tm.pt")
    for source, name in (("l2l.pt", "l2l-maml"), ("tm.pt", "torchmeta-maml")):
        assert cli(["import", str(tmp_path / source), "--name", name, "--set", f"data_root={omniglot_root}",
                    "--out", str(tmp_path / f"{name}.safetensors")]) == 0
    ckpts = [str(tmp_path / "l2l-maml.safetensors"), str(tmp_path / "torchmeta-maml.safetensors")]
    common = ["--out", str(tmp_path / "res"), "--tasks", "3", "--device", "cpu", "--quiet"]
    assert cli(["analyze", "freezing", *ckpts, *common, "--frozen", "none", "conv1,conv2,conv3,conv4"]) == 0
    assert cli(["analyze", "similarity", *ckpts, *common]) == 0
    freezing = pd.read_csv(tmp_path / "res" / "freezing.csv")
    assert sorted(freezing["checkpoint"].unique()) == ["l2l-maml", "torchmeta-maml"]
    assert len(freezing) == 4  # two models x two frozen sets, none pooled
    similarity = pd.read_csv(tmp_path / "res" / "similarity.csv")
    assert set(similarity["model"]) == {"l2l-maml", "torchmeta-maml"}
    assert cli(["report", str(tmp_path / "res")]) == 0
    report = (tmp_path / "res" / "report.md").read_text()
    assert "l2l-maml" in report and "torchmeta-maml" in report
    # trained elsewhere: not called a short run at "iteration 0", nor "MAML seed 0"
    assert "l2l-maml (imported); torchmeta-maml (imported)" in report
    assert "iterations 0" not in report and "Freezing (l2l-maml, imported, 1 seed)" in report
    # nor do its table rows give it the iteration and seed 0 of its config's defaults
    rows = [r for r in report.splitlines() if r.startswith("| l2l-maml | ")
            and ("| none |" in r or "| conv1, conv2, conv3, conv4 |" in r)]
    assert len(rows) == 2 and all("| imported |" in r and "| unknown |" in r for r in rows), rows
    assert "| freezing | l2l-maml | unknown | imported |" in report


def test_cross_similarity_of_two_architectures_names_the_layer_sizes(tmp_path, omniglot_root, capsys):
    """learn2learn's stride-2 conv4 and torchmeta's max-pooled one (the README's two imports)
    give conv maps of other sizes; CCA over spatial positions needs one size."""
    torch.save(stir_batchnorm(L2LOmniglotCNN(5)).state_dict(), tmp_path / "l2l.pt")
    torch.save(stir_batchnorm(TorchmetaCNN(1, 5)).state_dict(), tmp_path / "tm.pt")
    for name in ("l2l", "tm"):
        assert cli(["import", str(tmp_path / f"{name}.pt"), "--name", name, "--set", f"data_root={omniglot_root}",
                    "--out", str(tmp_path / f"{name}.safetensors")]) == 0
    capsys.readouterr()
    code = cli(["analyze", "cross", str(tmp_path / "l2l.safetensors"), str(tmp_path / "tm.safetensors"),
                "--out", str(tmp_path / "res"), "--tasks", "2", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "l2l and tm have conv3 maps of different sizes (4x4 vs 3x3)" in err[0] and "one architecture" in err[0]
    assert not (tmp_path / "res" / "cross.csv").exists()
    assert cli(["analyze", "cross", str(tmp_path / "l2l.safetensors"), str(tmp_path / "tm.safetensors"),
                "--layers", "conv1", "conv2", "--out", str(tmp_path / "res"), "--tasks", "2", "--device", "cpu",
                "--quiet"]) == 0  # the layers of one size compare
    assert set(pd.read_csv(tmp_path / "res" / "cross_tasks.csv").layer) == {"conv1", "conv2"}


def test_imported_models_of_unknown_seed_are_not_called_same_seed(tmp_path, omniglot_root, capsys):
    """Two imported models start from weights of their own unless their seed is given: the
    cross analysis must not put them beside ANIL and MAML of one repsim seed (same_seed)."""
    torch.manual_seed(0)
    runs = {"a": [], "b": [], "a0": ["--set", "seed=0"], "b0": ["--set", "seed=0"]}
    for name in runs:  # four models (the same weights twice would be refused as one model)
        torch.save(stir_batchnorm(L2LOmniglotCNN(5)).state_dict(), tmp_path / f"{name}.pt")
    for name, seed in runs.items():
        assert cli(["import", str(tmp_path / f"{name}.pt"), "--name", name, *seed,
                    "--set", f"data_root={omniglot_root}", "--out", str(tmp_path / f"{name}.safetensors")]) == 0
    assert "no seed given" in capsys.readouterr().out
    assert [load_checkpoint(tmp_path / f"{n}.safetensors").seed_known for n in runs] == [False, False, True, True]
    ckpts = [str(tmp_path / f"{n}.safetensors") for n in runs]
    assert cli(["analyze", "cross", *ckpts, "--out", str(tmp_path / "res"), "--tasks", "2",
                "--device", "cpu", "--quiet"]) == 0
    rows = pd.read_csv(tmp_path / "res" / "cross_tasks.csv")
    same = {frozenset((a, b)): s for a, b, s in zip(rows.model_a, rows.model_b, rows.same_seed)}
    assert same == {frozenset(p): p == ("a0", "b0") for p in
                    [("a", "b"), ("a", "a0"), ("a", "b0"), ("b", "a0"), ("b", "b0"), ("a0", "b0")]}


def test_vinyals_split_is_the_published_one_on_real_omniglot(omniglot_root):
    """torchmeta's and the prototypical networks' split: whole alphabets, 1028/172/423
    characters; Gurmukhi is the one alphabet cut in two (1-41 train, 42-45 test)."""
    from repsim.data.omniglot import load_splits
    splits = load_splits(omniglot_root, split_scheme="vinyals", progress=False)
    names = {k: set(v.class_names) for k, v in splits.items()}
    assert [len(names[k]) for k in ("train", "val", "test")] == [1028, 172, 423]
    assert not (names["train"] & names["test"]) and not (names["val"] & names["test"])
    alphabets = {k: {n.split("/")[0] for n in v} for k, v in names.items()}
    assert alphabets["val"] == {"Hebrew", "Mkhedruli_(Georgian)", "Armenian", "Early_Aramaic", "Bengali"}
    assert alphabets["train"] & alphabets["test"] == {"Gurmukhi"}
    assert {"Gurmukhi/character41", "Gurmukhi/character42"} <= names["train"] | names["test"]
    assert "Gurmukhi/character42" in names["test"] and "Gurmukhi/character41" in names["train"]
    # no seed: the same split whatever the seed
    again = load_splits(omniglot_root, split_scheme="vinyals", seed=5, progress=False)
    assert set(again["test"].class_names) == names["test"]


# a model of one's own, from Python --------------------------------------------------------
class Residual(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(cout, track_running_stats=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout, track_running_stats=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """README's example: a stem, two residual stages, a classifier named ``head``."""

    def __init__(self, ways=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16, track_running_stats=False),
                                  nn.ReLU())
        self.layer1 = Residual(16, 32)
        self.layer2 = Residual(32, 32)
        self.head = nn.Linear(32, ways)

    def forward(self, x):
        return self.head(self.layer2(self.layer1(self.stem(x))).mean(dim=(2, 3)))


def test_a_model_of_ones_own_is_probed_and_frozen_by_dotted_layer_names(omniglot_root):
    from repsim.checkpoint import Checkpoint
    from repsim.measures import freezing, layer_similarity
    from repsim.study import Study
    torch.manual_seed(0)
    settings = dict(dataset="omniglot", data_root=omniglot_root, ways=5, shots=1, inner_lr=0.4,
                    inner_steps=2, inner_steps_test=2, conventions="pytorch")
    maml = Checkpoint.from_module(TinyResNet(), name="tiny-maml", algorithm="maml", **settings)
    anil = Checkpoint.from_module(TinyResNet(), name="tiny-anil", algorithm="anil", **settings)
    study = Study.for_checkpoint(maml, num_tasks=4, progress=False)

    sim = layer_similarity(study, [maml, anil], layers=["stem", "layer1.conv1", "layer2", "head"])
    cka = sim[sim["measure"] == "cka"].groupby(["checkpoint", "layer"])["value"].mean()
    # ANIL's inner loop moves the head only: every body layer is unchanged, exactly
    assert all(abs(cka["tiny-anil", layer] - 1) < 1e-6 for layer in ("stem", "layer1.conv1", "layer2"))
    assert cka["tiny-anil", "head"] < 1 - 1e-3 and cka["tiny-maml", "layer1.conv1"] < 1 - 1e-6

    body = [["stem", "layer1", "layer2"]]
    rows = freezing(study, maml, frozen_sets=[[]] + body + [["layer1.conv1"]])
    frozen_body = rows[rows["frozen"] == "stem,layer1,layer2"]["accuracy"].item()
    # freezing the whole body is ANIL's inner loop on MAML's weights: the same tasks, the same numbers
    as_anil = Checkpoint.from_module(TinyResNet(), name="x", algorithm="anil", **settings)
    as_anil.params = maml.params
    assert freezing(study, as_anil, frozen_sets=[[]])["accuracy"].item() == pytest.approx(frozen_body, abs=1e-9)
    assert set(rows["checkpoint"]) == {"tiny-maml"} and len(rows) == 3
    with pytest.raises(RepsimError, match="unknown layer.*layer9.*dotted names"):
        freezing(study, maml, frozen_sets=[["layer9"]])
    # a seed is a model's own only when given: the default 0 would pair it with seed-0 runs
    seeded = Checkpoint.from_module(TinyResNet(), name="s", algorithm="maml", seed=3, **settings)
    assert not maml.seed_known and seeded.seed_known and seeded.config.seed == 3


def higher_net(ways=5):
    """higher's examples/maml-omniglot.py network: three unpadded conv blocks
    (conv, BatchNorm momentum 1, ReLU, 2x2 max-pool; 28 -> 13 -> 5 -> 1), flattened, Linear."""
    layers = []
    for cin in (1, 64, 64):
        layers += [nn.Conv2d(cin, 64, 3), nn.BatchNorm2d(64, momentum=1, affine=True),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, ways))


def test_highers_sequential_imports_as_three_unpadded_blocks(tmp_path, capsys):
    torch.manual_seed(3)
    peer = stir_batchnorm(higher_net())
    x = torch.rand(10, 1, 28, 28, dtype=torch.float64)
    ours, theirs = imported_logits(tmp_path, peer, x)
    out = capsys.readouterr().out
    assert "layout: higher" in out and "3 conv blocks" in out and "ink dark" in out
    assert (ours - theirs).abs().max() < 1e-5 and theirs.std() > 0.1
    assert probe_layers(load_checkpoint(tmp_path / "imported.safetensors").build_model()) == [
        "conv1", "conv2", "conv3", "head"]


def test_a_split_file_lists_the_test_characters(tmp_path, omniglot_root):
    """A user's own split: the Vinyals test characters written out as its lists are (with
    rotations and comments) give exactly the vinyals split's test classes."""
    from repsim.data.omniglot import load_splits
    vinyals = load_splits(omniglot_root, split_scheme="vinyals", progress=False)
    lines = ["# test characters"] + [f"{name}/rot{r:03d}" for name in vinyals["test"].class_names
                                     for r in (0, 90, 180, 270)]
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    splits = load_splits(omniglot_root, split_scheme=f"file:{tmp_path / 'test.txt'}", progress=False)
    assert splits["test"].class_names == vinyals["test"].class_names
    assert len(splits["val"].class_names) == 100 and len(splits["train"].class_names) == 1623 - 423 - 100
    assert not set(splits["train"].class_names) & set(splits["test"].class_names)
    (tmp_path / "bad.txt").write_text("Bengali/character01\nKlingon/character07\n")
    with pytest.raises(RepsimError, match="line 2: 'Klingon/character07' is not an Omniglot character"):
        load_splits(omniglot_root, split_scheme=f"file:{tmp_path / 'bad.txt'}", progress=False)


def test_an_import_without_its_test_split_warns_and_every_report_says_so(tmp_path, omniglot_root, capsys):
    """repsim import filled split_scheme=maml silently: a model trained on other characters was
    scored partly on characters it trained on, and nothing said so (issue 35)."""
    torch.manual_seed(0)
    torch.save(stir_batchnorm(L2LOmniglotCNN(5)).state_dict(), tmp_path / "l2l.pt")
    guessed = tmp_path / "guessed.safetensors"
    assert cli(["import", str(tmp_path / "l2l.pt"), "--name", "guessed", "--set", f"data_root={omniglot_root}",
                "--out", str(guessed)]) == 0
    assert "warning: the test split is a guess (split_scheme=maml" in capsys.readouterr().err
    assert load_checkpoint(guessed).extra["split_guessed"] is True
    given = tmp_path / "given.safetensors"
    assert cli(["import", str(tmp_path / "l2l.pt"), "--name", "given", "--set", f"data_root={omniglot_root}",
                "--set", "split_scheme=maml", "--out", str(given)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert load_checkpoint(given).extra["split_guessed"] is False
    assert cli(["analyze", "accuracy", str(guessed), "--tasks", "2", "--out", str(tmp_path / "res"),
                "--device", "cpu", "--quiet"]) == 0
    assert cli(["report", str(tmp_path / "res")]) == 0
    report = (tmp_path / "res" / "report.md").read_text()
    assert "Test split guessed for guessed" in report and "--set split_scheme=" in report

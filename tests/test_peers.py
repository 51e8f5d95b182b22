"""The diffusers peer behind minildm's interface: same outputs as the raw UNet2DModel, same loops, clear errors."""
import pytest
import torch

from minildm.checkpoints import load_model, save_model
from minildm.models.peers import DiffusersUNet, PeerConfig
from minildm.pipelines.guided import guided_sample
from minildm.schedulers import DDIMScheduler, DDPMScheduler
from minildm.training import TrainConfig, train_diffusion


def test_wrapper_equals_the_raw_diffusers_model():
    torch.manual_seed(0)
    peer = DiffusersUNet(PeerConfig(num_classes=10)).eval()
    x, t, y = torch.randn(2, 1, 32, 32), torch.tensor([5, 700]), torch.tensor([3, 10])
    with torch.no_grad():
        assert torch.equal(peer(x, t, y), peer.net(x, t, class_labels=y).sample)
        assert peer(x, 7, y).shape == (2, 1, 32, 32)  # a scalar t is broadcast


def test_peer_trains_samples_and_round_trips(tmp_path):
    torch.manual_seed(0)
    peer = DiffusersUNet(PeerConfig(num_classes=10))
    data = torch.utils.data.TensorDataset(torch.rand(16, 1, 32, 32) * 2 - 1, torch.randint(0, 10, (16,)))
    result = train_diffusion(peer, DDPMScheduler(100), data, TrainConfig(steps=2, batch_size=8, p_uncond=0.2),
                             progress=False)
    assert len(result.losses) == 2
    images = guided_sample(result.ema, DDIMScheduler(100), torch.tensor([0, 7]), 3.0,
                           torch.Generator().manual_seed(0), num_inference_steps=3, progress=False).images
    assert images.shape == (2, 1, 32, 32)
    path = save_model(result.ema, tmp_path / "peer")
    with torch.no_grad():
        x = torch.randn(1, 1, 32, 32)
        assert torch.equal(load_model(DiffusersUNet, path)(x, 3, torch.tensor([1])), result.ema(x, 3, torch.tensor([1])))


def test_peer_errors():
    with pytest.raises(ValueError, match="unknown layout 'huge'"):
        PeerConfig(layout="huge")
    peer = DiffusersUNet(PeerConfig(num_classes=10))
    with pytest.raises(ValueError, match="takes class labels"):
        peer(torch.randn(1, 1, 32, 32), 3)
    with pytest.raises(ValueError, match=r"in \[0, 10\]"):
        peer(torch.randn(1, 1, 32, 32), 3, torch.tensor([11]))
    with pytest.raises(ValueError, match="unconditional"):
        DiffusersUNet()(torch.randn(1, 1, 32, 32), 3, torch.tensor([1]))


def test_peer_recipe_trains_exports_and_is_benched_like_ddpm_cond(tmp_path, monkeypatch):
    import dataclasses
    from minildm import bench, recipes
    small = dataclasses.replace(recipes.DDPM_COND_PEER, model=PeerConfig(layout="same-layout", num_classes=10),
                                train=TrainConfig(steps=2, batch_size=4, checkpoint_every=2, warmup_steps=1, p_uncond=0.1))
    monkeypatch.setitem(recipes.DIFFUSION_RECIPES, "ddpm_cond_peer", small)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(16, 1, 32, 32, generator=g) * 2 - 1,
                                          torch.randint(0, 10, (16,), generator=g))
    monkeypatch.setattr(recipes, "load_tensors", lambda split: data)
    out = recipes.train_recipe("ddpm_cond_peer", run_dir=tmp_path / "runs", out_dir=tmp_path, progress=False)
    peer = load_model(DiffusersUNet, out)  # the same loop, checkpoint format and export as minildm's own recipes
    assert peer.meta["recipe"] == "ddpm_cond_peer" and peer.meta["images_seen"] == 8
    monkeypatch.setenv("MINILDM_CHECKPOINTS", str(tmp_path))
    with pytest.warns(UserWarning):  # small n
        row = bench.run(["ddpm_cond_peer"], n=10, steps=2, out_dir=tmp_path / "out", quick=True, readme=False,
                        guidance_scale=2.0)[0]
    assert bench.row_key(row) == "ddpm_cond_peer / ddim-2 / s=2 / n=10"
    assert row["train_images_seen"] == 8 and 0 <= row["class_accuracy"] <= 1 and "speedup_vs_peer" not in row

"""Meta-training throughput: episodes/s of quickstudy's ProtoNet and MAML (5-way 1-shot, Conv-4, 28x28)
against the plainest correct PyTorch loops written out by hand, and learn2learn's MAML if importable.

    .venv/bin/python benchmarks/meta_throughput.py --device cpu --steps 20 --threads 2
    .venv/bin/python benchmarks/meta_throughput.py --device cuda --steps 200 --json-out throughput.json

Every contender trains the same Conv-4 on the same in-memory data (synthetic 28x28 images, 200 classes
x 20, so no dataset is needed) with the same episode shapes: ProtoNet 5-way 1-shot 15 queries, one
episode per step; MAML 5-way 1-shot 1 query (the paper's), meta-batch 32 (``--maml-batch``), one
second-order inner step at lr 0.4. quickstudy runs through its real path (EpisodeSampler + learner +
the shared Trainer, which also writes metrics and a checkpoint at the end). The reference loops
index a Python list of per-class tensors with ``random.sample`` and move each episode to the device,
as a plain script does; the reference MAML uses hand-written functional conv/batch-norm layers with a
list of fast weights. Steps after ``--warmup`` are timed (CUDA synchronised). The ``sampler_*`` rows time the episode
sampler alone on an Omniglot-sized set, to show that data loading is not the bottleneck.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime

import torch
import torch.nn.functional as F

from quickstudy.backbones import build_backbone
from quickstudy.data.classification import ImageClassSet
from quickstudy.data.episodes import EpisodeSampler
from quickstudy.meta import FewShotConfig, build_learner, train_learner
from quickstudy.train import describe_device, step_generator

WAY, SHOT = 5, 1


def synthetic(classes: int = 200, per_class: int = 20, size: int = 28) -> ImageClassSet:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(classes * per_class, size, size, generator=g) * 255).to(torch.uint8)
    return ImageClassSet(
        images,
        torch.arange(classes).repeat_interleave(per_class),
        [str(c) for c in range(classes)],
        "synthetic",
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(step: Callable[[int], object], steps: int, warmup: int, device: str) -> float:
    """Seconds per step over ``steps`` steps after ``warmup``."""
    for i in range(warmup):
        step(i)
    sync(device)
    started = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    sync(device)
    return (time.perf_counter() - started) / steps


def ours(algo: str, data: ImageClassSet, args: argparse.Namespace) -> float:
    """Episodes/s of ``quickstudy fewshot train``'s path: sampler, learner, Trainer."""
    query, batch = (15, 1) if algo == "protonet" else (1, args.maml_batch)
    config = FewShotConfig(
        algo=algo, train_way=WAY, shot=SHOT, query=query, meta_batch=batch, steps=args.warmup + args.steps,
        learner_kw={"inner_lr": 0.4, "inner_steps": 1} if algo == "maml" else {},
    )  # fmt: skip
    torch.manual_seed(0)
    learner = build_learner(config)
    times: list[float] = []

    class Clock:  # the Trainer calls step_fn once per step: time from the end of warm-up
        def __init__(self) -> None:
            self.calls = 0

    with tempfile.TemporaryDirectory() as out:
        learner_meta_loss = learner.meta_loss
        clock = Clock()

        def counted(episode):  # type: ignore[no-untyped-def]
            clock.calls += 1
            if clock.calls == args.warmup * batch + 1:
                sync(args.device)
                times.append(time.perf_counter())
            return learner_meta_loss(episode)

        learner.meta_loss = counted  # type: ignore[method-assign]
        train_learner(learner, config, data, out_dir=out, device=args.device, amp=args.amp, log_every=10**9,
                      checkpoint_every=10**9)  # fmt: skip
        sync(args.device)
        elapsed = time.perf_counter() - times[0]
    return args.steps * batch / elapsed


def reference_episode(
    rng: random.Random, per_class: list[torch.Tensor], query: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A WAY-way SHOT-shot episode drawn the plain way (Python sampling, one copy to the device):
    support images, support labels, query images, query labels."""
    support, queries = [], []
    for c in rng.sample(range(len(per_class)), WAY):
        picks = rng.sample(range(len(per_class[c])), SHOT + query)
        support.append(per_class[c][picks[:SHOT]])
        queries.append(per_class[c][picks[SHOT:]])
    xs = torch.cat(support).unsqueeze(1).float().div(255).to(device)
    xq = torch.cat(queries).unsqueeze(1).float().div(255).to(device)
    ys = torch.arange(WAY, device=device).repeat_interleave(SHOT)
    yq = torch.arange(WAY, device=device).repeat_interleave(query)
    return xs, ys, xq, yq


def reference_protonet(data: ImageClassSet, args: argparse.Namespace) -> float:
    device, query = args.device, 15
    per_class = [data.images[data.labels == c] for c in range(len(data.classes))]
    torch.manual_seed(0)
    model = build_backbone("conv4").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = random.Random(0)

    def step(_: int) -> None:
        xs, _labels, xq, yq = reference_episode(rng, per_class, query, device)
        prototypes = model(xs).view(WAY, SHOT, -1).mean(1)
        logits = -torch.cdist(model(xq), prototypes).pow(2)
        loss = F.cross_entropy(logits, yq)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return 1.0 / timed(step, args.steps, args.warmup, device)


def functional_conv4(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """Conv-4 with explicit weights: 4 x (conv w, bn gamma, bn beta), then the linear head (w, b)."""
    for i in range(4):
        conv, gamma, beta = weights[3 * i : 3 * i + 3]
        x = F.conv2d(x, conv, padding=1)
        x = F.batch_norm(x, None, None, gamma, beta, training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return F.linear(x.mean((2, 3)), weights[12], weights[13])


def reference_maml(data: ImageClassSet, args: argparse.Namespace) -> float:
    device, query = args.device, 1
    per_class = [data.images[data.labels == c] for c in range(len(data.classes))]
    torch.manual_seed(0)
    weights: list[torch.Tensor] = []
    channels = 1
    for _ in range(4):
        conv = torch.empty(64, channels, 3, 3)
        torch.nn.init.kaiming_uniform_(conv, a=5**0.5)
        weights += [conv, torch.ones(64), torch.zeros(64)]
        channels = 64
    weights += [torch.randn(WAY, 64) * 64**-0.5, torch.zeros(WAY)]
    weights = [w.to(device).requires_grad_() for w in weights]
    optimizer = torch.optim.Adam(weights, lr=1e-3)
    rng = random.Random(0)

    def step(_: int) -> None:
        optimizer.zero_grad()
        for _task in range(args.maml_batch):
            xs, ys, xq, yq = reference_episode(rng, per_class, query, device)
            inner = F.cross_entropy(functional_conv4(xs, weights), ys)
            grads = torch.autograd.grad(inner, weights, create_graph=True)
            fast = [w - 0.4 * g for w, g in zip(weights, grads, strict=True)]
            loss = F.cross_entropy(functional_conv4(xq, fast), yq) / args.maml_batch
            loss.backward()  # per task: the graph of one task at a time
        optimizer.step()

    return args.maml_batch / timed(step, args.steps, args.warmup, device)


SAMPLER_SHAPES = {"sampler_5w1s15q": (5, 1, 15), "sampler_60w1s5q": (60, 1, 5), "sampler_60w5s5q": (60, 5, 5)}
"""Episode shapes of the throughput runs and of P6 ProtoNet training (60-way, 5 queries)."""


def sampler_rate(way: int, shot: int, query: int, args: argparse.Namespace) -> float:
    """Episodes/s that :class:`EpisodeSampler` draws (and moves to the device) from an Omniglot-sized set.

    4800 classes x 20 images of 28x28, as P6 meta-trains on: the data path alone, no learner.
    """
    sampler = EpisodeSampler(synthetic(4800, 20).to(args.device), way=way, shot=shot, query=query)
    steps = 20 * args.steps  # an episode takes milliseconds: time more of them than of training steps
    return 1.0 / timed(lambda i: sampler.sample(step_generator(0, i)), steps, args.warmup, args.device)


def learn2learn_maml(data: ImageClassSet, args: argparse.Namespace) -> float | None:
    try:
        import learn2learn as l2l  # type: ignore[import-not-found]
    except ImportError:
        return None
    device, query = args.device, 1
    per_class = [data.images[data.labels == c] for c in range(len(data.classes))]
    torch.manual_seed(0)
    backbone = build_backbone("conv4", track_running_stats=False)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(64, WAY)).to(device)
    maml = l2l.algorithms.MAML(model, lr=0.4, first_order=False)
    optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)
    rng = random.Random(0)

    def step(_: int) -> None:
        optimizer.zero_grad()
        for _task in range(args.maml_batch):
            xs, ys, xq, yq = reference_episode(rng, per_class, query, device)
            learner = maml.clone()
            learner.adapt(F.cross_entropy(learner(xs), ys))
            (F.cross_entropy(learner(xq), yq) / args.maml_batch).backward()
        optimizer.step()

    return args.maml_batch / timed(step, args.steps, args.warmup, device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per contender")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--maml-batch", type=int, default=32, help="MAML tasks per step (paper: 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--amp", action="store_true", help="quickstudy with bfloat16 autocast (CUDA)")
    parser.add_argument("--json-out", help="write the results here as JSON")
    parser.add_argument(
        "--only", help="comma-separated contenders to run (default: all); e.g. sampler_60w1s5q"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = synthetic()
    contenders: dict[str, Callable[[], float | None]] = {
        "protonet_quickstudy": lambda: ours("protonet", data, args),
        "protonet_reference": lambda: reference_protonet(data, args),
        "maml_quickstudy": lambda: ours("maml", data, args),
        "maml_reference": lambda: reference_maml(data, args),
        "maml_learn2learn": lambda: learn2learn_maml(data, args),
        **{name: functools.partial(sampler_rate, *shape, args) for name, shape in SAMPLER_SHAPES.items()},
    }
    chosen = args.only.split(",") if args.only else list(contenders)
    unknown = sorted(set(chosen) - set(contenders))
    if unknown:
        parser.error(f"--only: unknown contenders {', '.join(unknown)}; choose from {', '.join(contenders)}")
    results = {name: contenders[name]() for name in chosen}
    device = describe_device(args.device)
    print(
        f"## meta-training throughput, 5-way 1-shot Conv-4 — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {device}\n"
    )
    print("| contender | episodes/s |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {'not installed' if value is None else f'{value:.1f}'} |")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(
                {"device": device, "steps": args.steps, "maml_batch": args.maml_batch, **results},
                handle,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``plad.heap.keep_freed_memory``: training steps stop faulting their buffers in again.

Each mode runs in a fresh process (the allocator setting is process-wide and cannot be undone) and
counts the minor page faults of each of 30 training steps of a tiny Llama after 3 warm-up steps.
Page fault counts, not times: they do not depend on the CPU's speed or load. With the setting a step
faults nothing once the heap has grown, but the heap may still grow in a burst of ~4,000-10,000
faults on any step; by default glibc's adaptive trim makes many steps fault thousands of pages, how
many varies from run to run. So the test compares the faults of all steps but the two largest (the
bursts): a total over every step flaked under load, and so did the median step, once, when more than
half of the default's steps happened not to fault."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plad.heap import keep_freed_memory

SRC = Path(__file__).resolve().parents[1] / "src"

CHILD = """
import json, resource, sys
sys.path.insert(0, sys.argv[2])
import torch, transformers
torch.set_num_threads(1)
applied = False
if sys.argv[1] == "heap":
    from plad.heap import keep_freed_memory
    applied = keep_freed_memory()
torch.manual_seed(0)
config = transformers.LlamaConfig(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=2)
model = transformers.LlamaForCausalLM(config)
batch = torch.randint(0, 2048, (16, 128))
def step():
    model(input_ids=batch, labels=batch).loss.backward()
for _ in range(3):
    step()
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def steady(faults: list[int]) -> int:
    """The faults of every step but the two largest: what the steps cost once the heap has grown."""
    return sum(sorted(faults)[:-2])


def faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(SRC)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt; elsewhere a no-op")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in():
    default, heap = faults("default"), faults("heap")
    assert heap["applied"] and not default["applied"]
    # Measured over 15 steps: 0-1 faults per step with the setting besides one burst; by default most
    # steps fault 4,000-16,000 pages, and in one run of many, fewer than half of them did.
    assert steady(heap["faults"]) < steady(default["faults"]) / 4, (default, heap)


def test_is_a_no_op_where_the_c_library_has_no_mallopt(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False

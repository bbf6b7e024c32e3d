"""``plad.heap.keep_freed_memory``: training steps stop faulting their buffers in again.

Each mode runs in a fresh process (the allocator setting is process-wide and cannot be undone) and
counts the minor page faults of each of 15 training steps of a tiny Llama after 3 warm-up steps.
Page fault counts, not times: they do not depend on the CPU's speed or load. The test compares the
median step: with the setting a step faults nothing once the heap has grown, but the heap may still
grow in one burst of ~10,000 faults on any step; by default glibc's adaptive trim makes most steps
fault thousands of pages, how many varies from run to run (a total over steps flaked under load)."""

import json
import statistics
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
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(SRC)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt; elsewhere a no-op")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in():
    default, heap = faults("default"), faults("heap")
    assert heap["applied"] and not default["applied"]
    # Measured medians: 4,000-8,000 faults per step by default, 0-1 with the setting.
    assert statistics.median(heap["faults"]) < statistics.median(default["faults"]) / 4, (default, heap)


def test_is_a_no_op_where_the_c_library_has_no_mallopt(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False

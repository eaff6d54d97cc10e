"""``import mlc`` makes JAX's CPU client run calls inline (``mlc.runtime.xla_options.run_cpu_calls_inline``):
each case runs in a fresh interpreter, since the setting is read when JAX creates its client."""

import os
import subprocess
import sys
import textwrap

import pytest

CHECK = """
import jax, jax.numpy as jnp
{before}
import mlc
f = jax.jit(lambda a: jnp.linalg.matrix_power(a, 64).sum())
a = jnp.full((256, 256), 1e-3)
f(a).block_until_ready()
result = f(a)
print(jax.config.values["jax_cpu_enable_async_dispatch"], result.is_ready())
"""


def _run(before: str = "", **env) -> tuple[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("MLC_CPU_ASYNC_DISPATCH", "JAX_CPU_ENABLE_ASYNC_DISPATCH")}
    environment.update(env, JAX_PLATFORMS="cpu")
    code = textwrap.dedent(CHECK.format(before=before))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
    assert out.returncode == 0, out.stderr
    return tuple(out.stdout.split())


def test_import_mlc_makes_cpu_calls_inline():
    # Inline: the call returns with its result computed (with asynchronous dispatch it returns
    # at once, and a result is ready only once the worker thread has run it).
    assert _run() == ("False", "True")


@pytest.mark.parametrize("env", [{"MLC_CPU_ASYNC_DISPATCH": "1"}, {"JAX_CPU_ENABLE_ASYNC_DISPATCH": "true"}])
def test_the_users_choice_is_kept(env):
    assert _run(**env)[0] == "True"


def test_a_client_made_before_import_is_left_alone():
    assert _run(before="jax.devices()")[0] == "True"


def test_predictions_are_those_of_asynchronous_dispatch(tmp_path):
    """The same model, one process each way: equal outputs."""
    import numpy as np

    torch = pytest.importorskip("torch")
    from mlc.testing.torch_models import convert

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 10 * 10, 4))
    x = torch.randn(1, 3, 12, 12)
    path = str(tmp_path / "m.mlpackage")
    convert(module.eval(), (x,), target="iOS18", precision="fp32", path=path)
    np.save(tmp_path / "x.npy", x.numpy())
    code = (
        "import sys, numpy as np, mlc; m = mlc.load(sys.argv[1], cache_dir=False); "
        "name = list(m.input_description)[0]; out = m.predict({name: np.load(sys.argv[2])}); "
        "np.save(sys.argv[3], list(out.values())[0])"
    )
    outputs = []
    for i, env in enumerate([{}, {"MLC_CPU_ASYNC_DISPATCH": "1"}]):
        environment = {k: v for k, v in os.environ.items() if k != "MLC_CPU_ASYNC_DISPATCH"}
        environment.update(env)
        target = str(tmp_path / f"y{i}.npy")
        run = subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "x.npy"), target], capture_output=True, text=True, env=environment, timeout=300)
        assert run.returncode == 0, run.stderr
        outputs.append(np.load(target))
    np.testing.assert_array_equal(outputs[0], outputs[1])

"""Makes `lm_eval --model archbench ...` work once archbench is installed.

lm-eval 0.4 knows only the models of its own MODEL_MAPPING and of modules that happen to
be imported; it has no plugin entry points. So the install puts this file's code, as
`archbench-lm-eval.pth`, in site-packages (setup.py), where Python runs it at start-up.
It imports nothing heavy: it waits for `lm_eval.models` to be imported (lm-eval does that
before it looks a model up), then registers "archbench" as a lazy target, so archbench
and torch are imported only when lm-eval asks for the model. Standard library only.
"""
import importlib.abc
import importlib.util
import sys

NAME = "archbench"
TARGET = "archbench.suites.lm_eval_adapter:ArchbenchLM"


def register() -> None:
    """Registers the model with lm-eval unless it is there already (the adapter registers
    the class itself when it is imported first)."""
    try:
        from lm_eval.api.registry import model_registry
        if NAME not in model_registry:
            model_registry.register(NAME, target=TARGET)
    except Exception as e:  # an lm-eval without this registry: `archbench-lm-eval` still works
        print(f"archbench: could not register with lm-eval ({type(e).__name__}: {e}); "
              "use `archbench-lm-eval` instead of `lm_eval`", file=sys.stderr)


class AfterLmEvalModels(importlib.abc.MetaPathFinder):
    """Runs `register` right after `lm_eval.models` has been executed, once."""

    def find_spec(self, name, path=None, target=None):
        if name != "lm_eval.models":
            return None
        sys.meta_path.remove(self)  # once, and let the other finders find the real module
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                register()
            spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if "lm_eval.models" in sys.modules:
        register()
    elif not any(isinstance(f, AfterLmEvalModels) for f in sys.meta_path):
        sys.meta_path.insert(0, AfterLmEvalModels())


install()

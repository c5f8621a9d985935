"""Job scripts from Jinja templates.

Templates are looked up in order: an explicit ``--template`` file (or a site
profile's), then the site template dirs, then the packaged ``templates/``, then the
scheduler's own dirs (beside its module: a scheduler added outside hpcqueue's tree).
The environment is sandboxed with ``StrictUndefined``: a template cannot reach
Python internals, and a missing variable is an error naming the template, the
line and the variable, not an empty string in a batch script.
"""

from __future__ import annotations

import os
import shlex
import traceback
from pathlib import Path

from hpcqueue.exceptions import TemplateError

PACKAGED = Path(__file__).resolve().parent.parent / "templates"


def _environment(search: list[Path], texts: dict | None = None):
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    loader = jinja2.FileSystemLoader([str(p) for p in search])
    if texts:
        # a stored text keeps the name of the file it was read from, so that an error's
        # traceback frame (and so its line) is found as for a file (DictLoader gives none)
        def stored(name):
            if name not in texts:
                return None
            filename, text = texts[name]
            return text, filename, lambda: True
        loader = jinja2.ChoiceLoader([jinja2.FunctionLoader(stored), loader])
    env = SandboxedEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shquote"] = lambda v: shlex.quote(str(v))
    return env


def _where(e: Exception, name: str, filenames: set[str]) -> str:
    """`TEMPLATE line N` of the innermost template frame in the traceback; FILENAMES are
    the files the templates were read from (a template's frame carries one of them)."""
    lineno = getattr(e, "lineno", None)
    filename = getattr(e, "filename", None) or getattr(e, "name", None)
    if lineno is None:
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            if frame.filename in filenames or frame.filename.endswith(".j2"):
                filename, lineno = frame.filename, frame.lineno
                break
    return f"{filename or name} line {lineno}" if lineno else str(filename or name)


def render(template_name: str, context: dict, template_file: str | None = None,
           site_dirs: list[Path] | None = None, template_text: str | None = None,
           scheduler_dirs: list[Path] | None = None) -> str:
    """Render `template_name` (e.g. ``slurm.sh.j2``), or `template_file` if given (with
    `template_text`: that file's text as it was read earlier)."""
    import jinja2

    search = list(site_dirs or []) + [PACKAGED] + list(scheduler_dirs or [])
    texts = None
    if template_file is not None and template_text is not None:
        path = Path(template_file)
        search.insert(0, path.parent)
        template_name = path.name
        texts = {template_name: (str(path), template_text)}
    elif template_file is not None:
        path = Path(os.path.expanduser(template_file))
        if not path.is_file():
            raise TemplateError(f"template {template_file} does not exist or is not a file")
        search.insert(0, path.parent)
        template_name = path.name
    env = _environment(search, texts)
    filenames: set[str] = set()
    try:
        template = env.get_template(template_name)
        filenames.add(template.filename or template_name)
        return template.render(**context)
    except jinja2.TemplateNotFound as e:
        raise TemplateError(f"template {e.name} not found in {', '.join(map(str, search))}") \
            from None
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template {_where(e, template_name, filenames)}: {e.message}") \
            from None
    except jinja2.UndefinedError as e:
        raise TemplateError(
            f"template {_where(e, template_name, filenames)}: {e.message}; the variables a "
            f"template may use are: {', '.join(sorted(context))}"
        ) from None
    except jinja2.exceptions.SecurityError as e:
        raise TemplateError(f"template {_where(e, template_name, filenames)}: not allowed: {e}") \
            from None
    except (TypeError, ValueError, ArithmeticError) as e:
        raise TemplateError(f"template {_where(e, template_name, filenames)}: {e}") from None

"""Errors that carry a message meant for a person.

Every error raised for bad *user input* (a name, a shape, a value, a file) is a
``PrunelabError``. The CLI prints its message on one line and exits with
status 2; anything else is a bug and keeps its traceback.
"""


class PrunelabError(ValueError):
    """Bad input, described in words a user can act on."""


class StoreError(PrunelabError):
    """The store is damaged, cannot be written, or does not hold what was asked for."""


class ChecksumError(PrunelabError):
    """A file's content does not match its published checksum."""


class DataUnavailableError(PrunelabError):
    """A dataset's files are neither cached, mirrored nor downloadable."""


def from_validation_error(exc, where: str = "") -> PrunelabError:
    """Turn a pydantic ``ValidationError`` into one readable line per problem.

    ``where`` prefixes the key paths (a file name, or a section like
    ``training``) so the user can find the offending value.
    """
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        key = f"{where}.{path}" if where and path else (where or path)
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        message = err.get("msg", "invalid").removeprefix("Value error, ")
        if message.startswith(f"{path}.") or message.startswith(f"{path} "):
            key = where  # a validator's own message already names the key
        lines.append(f"{key}: {message}{shown}" if key else f"{message}{shown}")
    return PrunelabError("; ".join(lines))


def validated(model_cls, data: dict, where: str = ""):
    """``model_cls.model_validate(data)`` with errors as one PrunelabError naming each key."""
    from pydantic import ValidationError

    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, where) from None


# C0 controls (but tab), DEL and C1 controls: what a terminal may act on (escape sequences can retitle
# a window, clear the screen or forge output); a string read from a store is shown without them
_CONTROLS = {c: None for c in [*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f, *range(0x80, 0xa0)]}
_CONTROLS[0x0a] = " "  # a label or message stays on its line


def printable(text: object) -> str:
    """``text`` as a string safe to print on a terminal (control characters removed, lines joined)."""
    return str(text).translate(_CONTROLS)

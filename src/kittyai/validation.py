"""Human summaries of validation errors that never echo the rejected values."""

from pydantic import ValidationError


def describe_errors(err: ValidationError) -> str:
    """Return `field: problem; ...` for `err`.

    The input values are left out on purpose: options files, request bodies and
    Supervisor answers carry tokens and passwords, and these summaries get logged.
    """
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}"
        for error in err.errors(include_url=False, include_input=False)
    )

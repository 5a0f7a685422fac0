"""Every failure a client can see, as one small tree that renders to an OperationOutcome.

FhirError (400 processing)
├── InvalidRequest        400 invalid      malformed request, bad parameter, bad JSON/XML
├── ResourceInvalid       400 invalid      invalid resource (issues carry element paths)
├── Unauthorized          401 login
├── Forbidden             403 forbidden
├── NotFound              404 not-found    unknown type, id or version
├── MethodNotAllowed      405 not-supported
├── NotAcceptable         406 not-supported
├── Conflict              409 conflict     id clash, concurrent edit that cannot be retried
├── Gone                  410 deleted
├── PreconditionFailed    412 conflict     If-Match mismatch; conditional write matched several
├── UnsupportedMediaType  415 not-supported
├── Unprocessable         422 processing   well-formed but violates a business rule
└── ServerError           500 exception    never shows a stack trace
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# What a FHIR string may not hold (datatypes.html#string: below U+0020 only tab, CR and LF;
# UTF-8 cannot hold lone surrogates) and what XML 1.0 cannot carry at all (its Char
# production leaves out U+FFFE and U+FFFF): an OperationOutcome or an audit record that
# quotes a client's input must still be a resource the server can write, in JSON and XML.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """Text from outside (a client id, a request line, an error quoting the input) as a FHIR
    string: what it may not hold written as a visible `\\uXXXX`, so it still shows what was
    sent."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True)
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # IssueType code: invalid, required, value, code-invalid, not-found, ...
    diagnostics: str
    expression: tuple[str, ...] = ()
    # R4: "For HTTP errors, will be 'http.' + the parameter name" (a header is no element)
    location: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        # Messages and paths quote the client's input (a key holding U+0001, an id holding
        # U+FFFF): written as they are, the outcome could not be rendered as XML.
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.diagnostics:
            issue["diagnostics"] = printable(self.diagnostics)
        if self.location:
            issue["location"] = [printable(item) for item in self.location]
        if self.expression:
            issue["expression"] = [printable(item) for item in self.expression]
        return issue


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information_outcome(message: str) -> dict[str, Any]:
    return operation_outcome([Issue("information", "informational", message)])


class FhirError(Exception):
    status: int = 400
    issue_code: str = "processing"

    def __init__(
        self,
        message: str,
        *,
        issues: list[Issue] | None = None,
        expression: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        expr = (expression,) if expression else ()
        self.issues = issues or [Issue("error", self.issue_code, message, expr)]
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)

    def prefixed(self, path: str, resource_type: str | None = None) -> FhirError:
        """The same error, its element paths re-rooted (e.g. under Bundle.entry[3]).

        Paths in the entry's resource (`Observation.status`, with `resource_type`
        Observation) become `Bundle.entry[3].resource.status`; paths already rooted at `path`
        are left alone."""

        def rooted(expression: str) -> str:
            if expression == path or expression.startswith((f"{path}.", f"{path}[")):
                return expression
            if resource_type and expression == "resourceType":
                return f"{path}.resource.resourceType"
            if resource_type and expression.startswith(resource_type):
                rest = expression[len(resource_type) :]
                if rest == "" or rest[0] in ".[":
                    return f"{path}.resource{rest}"
            return f"{path}.{expression}"

        def told(text: str) -> str:
            return text if text.startswith(path) else f"{path}: {text}"

        self.issues = [
            Issue(
                i.severity,
                i.code,
                told(i.diagnostics),
                tuple(rooted(e) for e in i.expression) or (path,),
                i.location,
            )
            for i in self.issues
        ]
        self.message = told(self.message)
        return self


class InvalidRequest(FhirError):
    status, issue_code = 400, "invalid"


class ResourceInvalid(FhirError):
    status, issue_code = 400, "invalid"


class Unauthorized(FhirError):
    status, issue_code = 401, "login"


class Forbidden(FhirError):
    status, issue_code = 403, "forbidden"


class NotFound(FhirError):
    status, issue_code = 404, "not-found"


class MethodNotAllowed(FhirError):
    status, issue_code = 405, "not-supported"

    def __init__(self, message: str, *, allow: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.allow = allow  # the Allow header, when the refusal knows better than the URL


class NotAcceptable(FhirError):
    status, issue_code = 406, "not-supported"


class Conflict(FhirError):
    status, issue_code = 409, "conflict"


class Gone(FhirError):
    status, issue_code = 410, "deleted"


class PreconditionFailed(FhirError):
    status, issue_code = 412, "conflict"


class UnsupportedMediaType(FhirError):
    status, issue_code = 415, "not-supported"


class Unprocessable(FhirError):
    status, issue_code = 422, "processing"


class ServerError(FhirError):
    status, issue_code = 500, "exception"

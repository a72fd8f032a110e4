"""XML-RPC as xapi speaks it (research/xenapi.md 1.2-1.3): the request parser and the reply
encoder of the wire-level pool server.

The encoder writes what ocaml-rpc writes, not what Python's marshaller would: strings and 64-bit
integers (which the model already holds as decimal strings) as untyped ``<value>`` text, ``<i4>``
only for small Python ints (xapi's int32 fields), ``<boolean>``, ``<double>`` with 16 significant
digits, ``<dateTime.iso8601>``, arrays and structs. Every call is answered with the
``{Status, Value}`` or ``{Status, ErrorDescription}`` envelope, never with ``<fault>``; only a
request that cannot be parsed gets HTTP 500 with an HTML body, as from xapi.
"""
import xmlrpc.client
from typing import Any, List, Tuple
from xml.sax.saxutils import escape

from simulations.xapi.fabric import Failure, Ok, Outcome

MAX_BODY = 300 * 1024  # xapi's request body limit
INT32 = (-(1 << 31), (1 << 31) - 1)


class ParseError(ValueError):
    """The request is not a well-formed XML-RPC method call."""


def parse_request(body: bytes) -> Tuple[str, List[Any]]:
    """The method name and parameters of one XML-RPC request."""
    try:
        params, method = xmlrpc.client.loads(body, use_datetime=False)
    except Exception as exc:  # expat errors, bad values, missing elements: all one answer
        raise ParseError("%s: %s" % (type(exc).__name__, exc)) from None
    if not method:
        raise ParseError("no methodName in the request")
    return method, list(params)


def encode_value(value: Any) -> str:
    out: List[str] = []
    _encode(value, out)
    return "".join(out)


def _encode(value: Any, out: List[str]) -> None:
    if isinstance(value, bool):  # before int: bool is an int
        out.append("<value><boolean>%d</boolean></value>" % (1 if value else 0))
    elif isinstance(value, str):
        out.append("<value>%s</value>" % escape(value))
    elif isinstance(value, int):
        if INT32[0] <= value <= INT32[1]:
            out.append("<value><i4>%d</i4></value>" % value)
        else:  # xapi's 64-bit ints travel as strings
            out.append("<value>%d</value>" % value)
    elif isinstance(value, float):
        out.append("<value><double>%.16g</double></value>" % value)
    elif isinstance(value, xmlrpc.client.DateTime):
        out.append("<value><dateTime.iso8601>%s</dateTime.iso8601></value>" % value.value)
    elif isinstance(value, (list, tuple)):
        out.append("<value><array><data>")
        for item in value:
            _encode(item, out)
        out.append("</data></array></value>")
    elif isinstance(value, dict):
        out.append("<value><struct>")
        for key, item in value.items():
            out.append("<member><name>%s</name>" % escape(str(key)))
            _encode(item, out)
            out.append("</member>")
        out.append("</struct></value>")
    elif value is None:  # void
        out.append("<value></value>")
    else:
        raise TypeError("cannot encode %r for xapi" % (value,))


def encode_response(outcome: Outcome) -> bytes:
    """The methodResponse for an Ok or a Failure outcome."""
    if isinstance(outcome, Ok):
        envelope = {"Status": "Success", "Value": outcome.value}
    elif isinstance(outcome, Failure):
        envelope = {"Status": "Failure", "ErrorDescription": list(outcome.description)}
    else:
        raise TypeError("%r has no XML-RPC reply" % (outcome,))
    return ('<?xml version="1.0"?><methodResponse><params><param>%s</param></params>'
            "</methodResponse>" % encode_value(envelope)).encode("utf-8")


def parse_error_page(detail: str) -> bytes:
    """The HTML body of xapi's HTTP 500 for a request it cannot parse."""
    return ("<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; "
            "please wait a while and try again. If the problem persists, please contact your "
            "support representative.<h1> Additional information </h1>Xmlrpc.Parse_error(%s)"
            "</body></html>" % escape(detail)).encode("utf-8")

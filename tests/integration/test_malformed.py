"""Strict parsing (STYLE.md): each malformed request gets its status, a Proxy-Status header and a
close, and the origin it names (a spy, allowed as a destination) receives nothing — or, for a
bad chunk inside a body already being streamed, never a complete forwarded request. Also the
header deadline (slowloris) with timeouts.header = 2s."""

import select
import time
import unittest

from egressd_harness import ConnectionClosed, ProxyTestCase, SpyOrigin

E400 = (400, "http_request_error")
E501 = (501, "http_request_error")
E414 = (414, "http_request_error")
E431 = (431, "http_request_error")
E505 = (505, None)  # the error type for 505 is not fixed by the interface

NOTHING = "nothing"               # the spy gets no connection at all
NO_COMPLETE_BODY = "no_complete"  # the spy may get the head, never the whole body

GET = b"GET http://{o}/ HTTP/1.1\r\nHost: {o}\r\n"
POST = b"POST http://{o}/ HTTP/1.1\r\nHost: {o}\r\n"


def chunked_post(size_line: bytes, first: bytes = b"5\r\nhello\r\n") -> bytes:
    """A chunked POST whose second chunk has the given size line, ending in a terminator that
    would make the request complete if the bad chunk were accepted."""
    return (POST + b"Transfer-Encoding: chunked\r\n\r\n" + first + size_line + b"\r\n"
            + b"0123456789abcdef\r\n0\r\n\r\n")


# (name, raw bytes with {o} = spy host:port and {p} = spy port, (status, error type),
#  what the spy may see, whether the spy answers heads)
CASES = [
    # line ends
    ("bare_lf_everywhere", b"GET http://{o}/ HTTP/1.1\nHost: {o}\n\n", E400),
    ("bare_lf_request_line", b"GET http://{o}/ HTTP/1.1\nHost: {o}\r\n\r\n", E400),
    ("bare_lf_header_line", GET + b"X-A: b\n\r\n", E400),
    ("bare_lf_final_line", GET + b"\n", E400),
    ("bare_cr_line_end", b"GET http://{o}/ HTTP/1.1\rHost: {o}\r\n\r\n", E400),
    ("bare_cr_in_value", GET + b"X-A: a\rb\r\n\r\n", E400),
    # header syntax
    ("space_before_colon", GET + b"X-A : b\r\n\r\n", E400),
    ("tab_before_colon", GET + b"X-A\t: b\r\n\r\n", E400),
    ("space_before_colon_host", b"GET http://{o}/ HTTP/1.1\r\nHost : {o}\r\n\r\n", E400),
    ("obs_fold_space", GET + b"X-A: a\r\n b\r\n\r\n", E400),
    ("obs_fold_tab", GET + b"X-A: a\r\n\tb\r\n\r\n", E400),
    ("whitespace_before_first_header", b"GET http://{o}/ HTTP/1.1\r\n Host: {o}\r\n\r\n",
     E400),
    ("empty_header_name", GET + b": value\r\n\r\n", E400),
    ("bad_char_in_header_name", GET + b"X(A): b\r\n\r\n", E400),
    ("header_without_colon", GET + b"X-A b\r\n\r\n", E400),
    ("nul_in_header_value", GET + b"X-A: a\x00b\r\n\r\n", E400),
    ("missing_host_http11", b"GET http://{o}/ HTTP/1.1\r\nX-A: b\r\n\r\n", E400),
    ("two_host_headers", GET + b"Host: {o}\r\n\r\n", E400),
    # Content-Length
    ("cl_and_te", POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     E400),
    ("te_and_cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
     E400),
    ("duplicate_cl_same", POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", E400),
    ("cl_list_same", POST + b"Content-Length: 5, 5\r\n\r\nhello", E400),
    ("duplicate_cl_different", POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     E400),
    ("cl_non_numeric", POST + b"Content-Length: abc\r\n\r\nhello", E400),
    ("cl_negative", POST + b"Content-Length: -1\r\n\r\nhello", E400),
    ("cl_plus_sign", POST + b"Content-Length: +5\r\n\r\nhello", E400),
    ("cl_hex", POST + b"Content-Length: 0x5\r\n\r\nhello", E400),
    ("cl_inner_space", POST + b"Content-Length: 1 0\r\n\r\nhello", E400),
    ("cl_empty", POST + b"Content-Length: \r\n\r\nhello", E400),
    ("cl_overflow", POST + b"Content-Length: 99999999999999999999999\r\n\r\nhello", E400),
    # Transfer-Encoding
    ("te_gzip_chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", E501),
    ("te_chunked_gzip", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", E400),
    ("te_identity", POST + b"Transfer-Encoding: identity\r\n\r\nhello", E501),
    ("te_unknown_coding", POST + b"Transfer-Encoding: x-custom\r\n\r\nhello", E501),
    # two fields: 501 as the list "gzip, chunked", or 400 for a repeated field; never forwarded
    ("te_two_fields_gzip_then_chunked",
     POST + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     ((400, 501), "http_request_error")),
    ("te_in_http10", b"POST http://{o}/ HTTP/1.0\r\nHost: {o}\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", E400),
    # chunk framing: the head may already be on its way, the body must never complete
    ("chunk_size_not_hex", chunked_post(b"zz"), E400, NO_COMPLETE_BODY, False),
    ("chunk_size_negative", chunked_post(b"-1"), E400, NO_COMPLETE_BODY, False),
    ("chunk_size_0x_prefix", chunked_post(b"0x10"), E400, NO_COMPLETE_BODY, False),
    ("chunk_size_17_hex_digits", chunked_post(b"10000000000000010"), E400, NO_COMPLETE_BODY,
     False),
    ("chunk_size_leading_space", chunked_post(b" 10"), E400, NO_COMPLETE_BODY, False),
    ("chunk_size_empty", chunked_post(b""), E400, NO_COMPLETE_BODY, False),
    ("first_chunk_size_not_hex", POST + b"Transfer-Encoding: chunked\r\n\r\nq\r\nhello\r\n"
     b"0\r\n\r\n", E400, NO_COMPLETE_BODY, False),
    ("chunk_data_without_crlf", POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n"
     b"0\r\n\r\n", E400, NO_COMPLETE_BODY, False),
    # request line and target
    ("userinfo_in_target", b"GET http://user:pw@{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("userinfo_in_connect", b"CONNECT user@{o} HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("non_ascii_host", "GET http://bäd.invalid/ HTTP/1.1\r\nHost: bäd.invalid\r\n\r\n"
     .encode(), E400),
    ("non_ascii_host_connect", "CONNECT bäd.invalid:443 HTTP/1.1\r\nHost: bäd.invalid:443\r\n"
     "\r\n".encode(), E400),
    ("unbracketed_ipv6_connect", b"CONNECT ::1:{p} HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("unbracketed_ipv6_http", b"GET http://::1:{p}/ HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("connect_without_port", b"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", E400),
    ("connect_empty_port", b"CONNECT 127.0.0.1: HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", E400),
    ("connect_port_0", b"CONNECT 127.0.0.1:0 HTTP/1.1\r\nHost: 127.0.0.1:0\r\n\r\n", E400),
    ("connect_port_65536", b"CONNECT 127.0.0.1:65536 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
     E400),
    ("connect_port_alpha", b"CONNECT 127.0.0.1:abc HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", E400),
    ("connect_port_overflow_wraps", b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n",
     E400),  # {p} + 65536: a 16-bit truncation would land on the spy
    ("connect_with_path", b"CONNECT {o}/x HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("connect_absolute_uri", b"CONNECT http://{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("connect_with_content_length", b"CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n"
     b"Content-Length: 5\r\n\r\nhello", E400),
    ("connect_with_chunked_body", b"CONNECT {o} HTTP/1.1\r\nHost: {o}\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", E400),
    ("uri_port_out_of_range", b"GET http://127.0.0.1:99999/ HTTP/1.1\r\nHost: x\r\n\r\n",
     E400),
    ("space_in_target", b"GET http://{o}/a b HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("nul_in_target", b"GET http://{o}/a\x00b HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("del_in_target", b"GET http://{o}/a\x7fb HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("fragment_in_target", b"GET http://{o}/a#frag HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("double_space_in_request_line", b"GET  http://{o}/ HTTP/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("lowercase_version", b"GET http://{o}/ http/1.1\r\nHost: {o}\r\n\r\n", E400),
    ("garbage_version", b"GET http://{o}/ HTTP/11\r\nHost: {o}\r\n\r\n", E400),
    ("version_1_2", b"GET http://{o}/ HTTP/1.2\r\nHost: {o}\r\n\r\n", E505),
    ("version_2_0", b"GET http://{o}/ HTTP/2.0\r\nHost: {o}\r\n\r\n", E505),
    # sizes
    ("request_line_over_8k", b"GET http://{o}/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: {o}\r\n\r\n",
     E414),
    ("over_100_header_fields",
     GET + b"".join(b"X-F%d: v\r\n" % i for i in range(120)) + b"\r\n", E431),
    ("header_block_over_64k",
     GET + b"".join(b"X-Big%d: " % i + b"b" * 2000 + b"\r\n" for i in range(40)) + b"\r\n",
     E431),
    ("single_header_over_64k", GET + b"X-Huge: " + b"h" * 70000 + b"\r\n\r\n", E431),
    # bytes after a refused request are never parsed
    ("denied_connect_then_pipelined_request",
     b"CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n" + GET + b"\r\n",
     (403, "http_request_denied")),
    ("bad_connect_then_pipelined_request",
     b"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + GET + b"\r\n", E400),
    ("bad_request_then_pipelined_request",
     b"GET / HTTP/1.1\r\nHost: {o}\r\n\r\n" + GET + b"\r\n", E400),
    ("connect_with_body_then_pipelined_request",
     b"CONNECT {o} HTTP/1.1\r\nHost: {o}\r\nContent-Length: 41\r\n\r\n" + GET + b"\r\n", E400),
]


def render(template: bytes, spy: SpyOrigin) -> bytes:
    data = template.replace(b"{o}", spy.address.encode()).replace(b"{p}", str(spy.port).encode())
    if b"%d" in data:
        data = data.replace(b"%d", str(spy.port + 65536).encode())
    return data


class MalformedTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.proxy = cls.start_proxy(env={
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8,::1/128",
            "EGRESSD_CONNECT_PORTS": "1-24,26-65535",  # 25 stays denied
            "EGRESSD_HTTP_PORTS": "1-65535",
        })

    def run_case(self, template: bytes, expect, spy_may_see=NOTHING, spy_responds=True):
        status, error = expect
        spy = self.origin(SpyOrigin(respond=spy_responds))
        data = render(template, spy)
        c = self.client()
        sent = c.try_send(data)
        try:
            resp = c.read_response("CONNECT" if data.startswith(b"CONNECT") else "GET")
        except ConnectionClosed as e:
            self.fail(f"no response (all bytes sent: {sent}): {e}\n{self.proxy.tail()}")
        self.assertProxyError(resp, status, error)
        closed, extra = c.wait_closed(15)
        self.assertTrue(closed, "connection not closed after the error response")
        self.assertEqual(extra, b"", "bytes after the error response (a second response?)")
        time.sleep(0.2)  # let a connection egressd might still make reach the spy
        received = spy.received()
        if spy_may_see == NOTHING:
            self.assertEqual(received, [], "the origin received bytes")
            return
        for i, raw in enumerate(received):
            head, sep, body = raw.partition(b"\r\n\r\n")
            self.assertFalse(sep and (b"\r\n0\r\n\r\n" in b"\r\n" + body),
                             f"the origin received a complete chunked request: {raw!r}")
            with spy.lock:
                ok = spy.lock.wait_for(lambda: spy.closed[i], 15)
            self.assertTrue(ok, "egressd left the upstream connection with a partial "
                                "request open")

    def test_valid_request_control(self):
        # The same machinery with valid requests near the limits: must be forwarded.
        spy = self.origin(SpyOrigin())
        cases = [
            ("plain", GET + b"\r\n"),
            ("long_line_under_limit",
             b"GET http://{o}/" + b"a" * 7900 + b" HTTP/1.1\r\nHost: {o}\r\n\r\n"),
            ("99_fields", GET + b"".join(b"X-F%d: v\r\n" % i for i in range(98)) + b"\r\n"),
            ("ows_around_value", GET + b"X-A: \t v \t\r\n\r\n"),
            ("cl_zero_post", POST + b"Content-Length: 0\r\n\r\n"),
        ]
        for name, template in cases:
            with self.subTest(case=name):
                c = self.client()
                c.send(render(template, spy))
                resp = c.read_response()
                self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
                self.assertEqual(resp.body, b"ok")
                c.close()


def _make_case(template, expect, spy_may_see=NOTHING, spy_responds=True):
    def test(self):
        self.run_case(template, expect, spy_may_see, spy_responds)
    return test


for _case in CASES:
    setattr(MalformedTest, f"test_{_case[0]}", _make_case(*_case[1:]))


class HeaderDeadlineTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.proxy = cls.start_proxy(
            config="version: 1\ntimeouts:\n  header: 2s\n",
            env={"EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_HTTP_PORTS": "1-65535"})

    def test_half_header_gets_408_and_close(self):
        spy = self.origin(SpyOrigin())
        c = self.client()
        c.send(f"GET http://{spy.address}/ HTTP/1.1\r\nHost: {spy.address}\r\nX-Sl".encode())
        resp = c.read_response()  # guard: the socket timeout (30 s)
        self.assertProxyError(resp, 408, "http_request_error")
        closed, extra = c.wait_closed(15)
        self.assertTrue(closed)
        self.assertEqual(extra, b"")
        self.assertEqual(spy.connections, 0)

    def test_trickled_header_still_gets_408(self):
        # One byte every 0.2 s keeps the connection busy, but the deadline covers the whole
        # header, not the gap between bytes.
        spy = self.origin(SpyOrigin())
        c = self.client()
        data = (f"GET http://{spy.address}/ HTTP/1.1\r\nHost: {spy.address}\r\nX-Slow: "
                .encode() + b"s" * 2000 + b"\r\n\r\n")
        answered = False
        for i in range(150):  # at most ~30 s
            if not c.try_send(data[i:i + 1]):
                break
            r, _, _ = select.select([c.sock], [], [], 0.2)
            if r:
                answered = True
                break
        self.assertTrue(answered, "no answer while the header trickled in for 30 s")
        resp = c.read_response()
        self.assertProxyError(resp, 408, "http_request_error")
        self.assertTrue(c.wait_closed(15)[0])
        self.assertEqual(spy.connections, 0)

    def test_silent_connection_is_closed(self):
        c = self.client()
        closed, extra = c.wait_closed(30)
        self.assertTrue(closed, "a connection that never sends a byte is kept open")
        if extra:  # a 408 is fine, silence too; anything else is not
            self.assertTrue(extra.startswith(b"HTTP/1.1 408 "), extra)


if __name__ == "__main__":
    unittest.main()

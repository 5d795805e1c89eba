/*
 * The per-segment hot spots of the userspace data path in C. Optional: `speedups.py` falls
 * back to pure Python when this module was not built (no compiler), with the same results
 * (tests compare the two).
 *
 * word_sum(data) -> int: the 16-bit ones' complement sum (RFC 1071) of data's big-endian
 * 16-bit words, a trailing odd byte being the high half of a last word padded with zero.
 * Never 0 unless every byte is 0 (the end-around carry never yields 0 from a non-zero word).
 * The data path sums every TCP payload twice (sender and receiver): in Python, a third of
 * the CPU time of a segment.
 *
 * tcp_in_ipv4(frame, offset, segment_type) -> (src, dst, segment) | None: the IPv4 packet at
 * frame[offset:] parsed, when it is the common case: no IP options, not a fragment, TCP, both
 * checksums right, the TCP data offset inside the packet. segment is
 * segment_type(src_port, dst_port, seq, ack, flags, window, payload, options), src and dst
 * the 4-byte addresses. Anything else gives None and goes through frames.py's parsers, which
 * accept what they accept and name what is wrong: this only saves their Python calls.
 *
 * tcp_ipv4_frame(dst_mac, src_mac, src_ip, dst_ip, ident, src_port, dst_port, seq, ack,
 * flags, window, payload) -> bytes: the Ethernet frame of a TCP segment without options in an
 * IPv4 packet (DF, TTL 64, no options), both checksums computed, in one allocation: what
 * frames.py's tcp_header, ipv4_header and a join make (frames.tcp_ipv4_frame_python).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/*
 * The sum is taken over native-order 64-bit words with the carry out of each addition added
 * back in (2**64 is 1 modulo 0xFFFF, so this is the same ones' complement sum), then folded to
 * 16 bits. Byte order does not change a ones' complement sum except by swapping its two bytes
 * (RFC 1071 section 2(B)), so one swap at the end on a little-endian machine gives the sum of
 * the big-endian words.
 */
static uint16_t ones_complement_sum(const unsigned char *data, size_t size)
{
    uint64_t sum = 0;
    uint64_t word;

    while (size >= 8) {
        memcpy(&word, data, 8); /* memcpy: no unaligned load; compilers make it one move */
        sum += word;
        sum += (sum < word); /* end-around carry */
        data += 8;
        size -= 8;
    }
    /* The last 0-7 bytes, padded with zero to a whole 64-bit word: their order in memory is
     * kept, so an odd last byte becomes the high half of its 16-bit word, as RFC 1071 says. */
    if (size > 0) {
        word = 0;
        memcpy(&word, data, size);
        sum += word;
        sum += (sum < word);
    }
    /* Fold 64 -> 32 -> 16 bits, each time adding the carry back in. */
    sum = (sum & 0xFFFFFFFFu) + (sum >> 32);
    sum = (sum & 0xFFFFFFFFu) + (sum >> 32);
    sum = (sum & 0xFFFFu) + (sum >> 16);
    sum = (sum & 0xFFFFu) + (sum >> 16);

    uint16_t folded = (uint16_t)sum;
#if PY_LITTLE_ENDIAN
    folded = (uint16_t)((folded << 8) | (folded >> 8));
#endif
    return folded;
}

static PyObject *word_sum(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    (void)module;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL; /* not bytes-like: the TypeError says so */
    /* The GIL is kept: a segment's sum takes less time than releasing it would. */
    uint16_t sum = ones_complement_sum((const unsigned char *)view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromLong(sum);
}

static unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

static unsigned long be32(const unsigned char *p)
{
    return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3];
}

/* The fields of a well-formed IPv4/TCP packet (see the top of the file), or NULL with no
 * exception set when the packet is anything else. */
static PyObject *parse_tcp_in_ipv4(const unsigned char *ip, Py_ssize_t size, PyObject *type)
{
    if (size < 20 || ip[0] != 0x45 /* version 4, 20-byte header */ || ip[9] != 6 /* TCP */)
        return NULL;
    Py_ssize_t total = (Py_ssize_t)be16(ip + 2);
    if (total < 40 || total > size || (be16(ip + 6) & 0x3FFF) /* a fragment */)
        return NULL;
    if (ones_complement_sum(ip, 20) != 0xFFFF) /* a header with a right checksum sums to it */
        return NULL;
    const unsigned char *tcp = ip + 20;
    Py_ssize_t tcp_size = total - 20;
    Py_ssize_t data_offset = (Py_ssize_t)(tcp[12] >> 4) * 4;
    if (data_offset < 20 || data_offset > tcp_size)
        return NULL;
    /* The pseudo-header (addresses, protocol, TCP length) and the segment: their sum with
     * the checksum field in is 0 modulo 0xFFFF when the checksum is right. */
    uint64_t sum = (uint64_t)ones_complement_sum(ip + 12, 8) + 6 + (uint64_t)tcp_size +
                   ones_complement_sum(tcp, (size_t)tcp_size);
    if (sum % 0xFFFF != 0)
        return NULL;
    PyObject *fields[8] = {
        PyLong_FromLong((long)be16(tcp)),
        PyLong_FromLong((long)be16(tcp + 2)),
        PyLong_FromUnsignedLong(be32(tcp + 4)),
        PyLong_FromUnsignedLong(be32(tcp + 8)),
        PyLong_FromLong(tcp[13]),
        PyLong_FromLong((long)be16(tcp + 14)),
        PyBytes_FromStringAndSize((const char *)tcp + data_offset, tcp_size - data_offset),
        PyBytes_FromStringAndSize((const char *)tcp + 20, data_offset - 20),
    };
    PyObject *segment = NULL;
    PyObject *result = NULL;
    int made = 1;
    for (int i = 0; i < 8; i++)
        made &= fields[i] != NULL;
    if (made)
        segment = PyObject_Vectorcall(type, fields, 8, NULL);
    for (int i = 0; i < 8; i++)
        Py_XDECREF(fields[i]);
    if (segment != NULL) {
        result = Py_BuildValue("(y#y#N)", (const char *)ip + 12, (Py_ssize_t)4,
                               (const char *)ip + 16, (Py_ssize_t)4, segment);
    }
    if (result == NULL && !PyErr_Occurred())
        PyErr_NoMemory();
    return result;
}

static PyObject *tcp_in_ipv4(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "tcp_in_ipv4(frame, offset, segment_type) takes 3 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    if (offset >= 0 && offset <= view.len)
        result = parse_tcp_in_ipv4((const unsigned char *)view.buf + offset, view.len - offset,
                                   args[2]);
    PyBuffer_Release(&view);
    if (result == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return result;
}

static void put16(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, unsigned long v)
{
    put16(p, v >> 16);
    put16(p + 2, v & 0xFFFF);
}

/* The checksum field of words whose ones' complement sum is `sum` (not all zero: both
 * headers have non-zero words), as frames.checksum_of_sum gives it. */
static unsigned long checksum_field(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return ~sum & 0xFFFF;
}

/* A field given as a Python int must fit its width: what struct.pack refuses, refused. */
static int in_range(long value, long max, const char *name)
{
    if (value < 0 || value > max) {
        PyErr_Format(PyExc_ValueError, "%s %ld does not fit 0..%ld", name, value, max);
        return 0;
    }
    return 1;
}

enum { ETHERNET = 14, IPV4 = 20, TCP = 20 };

static PyObject *tcp_ipv4_frame(PyObject *module, PyObject *args)
{
    const char *dst_mac, *src_mac, *src_ip, *dst_ip;
    Py_ssize_t dst_mac_size, src_mac_size, src_ip_size, dst_ip_size;
    long ident, src_port, dst_port, seq, ack, flags, window;
    Py_buffer payload;
    (void)module;
    if (!PyArg_ParseTuple(args, "y#y#y#y#llllllly*:tcp_ipv4_frame", &dst_mac, &dst_mac_size,
                          &src_mac, &src_mac_size, &src_ip, &src_ip_size, &dst_ip,
                          &dst_ip_size, &ident, &src_port, &dst_port, &seq, &ack, &flags,
                          &window, &payload))
        return NULL;
    PyObject *frame = NULL;
    Py_ssize_t total = IPV4 + TCP + payload.len;
    if (dst_mac_size != 6 || src_mac_size != 6 || src_ip_size != 4 || dst_ip_size != 4) {
        PyErr_SetString(PyExc_ValueError, "MAC addresses take 6 bytes, IPv4 addresses 4");
    } else if (total > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "IPv4 packet of %zd bytes exceeds 65535", total);
    } else if (in_range(ident, 0xFFFF, "ident") && in_range(src_port, 0xFFFF, "src_port") &&
               in_range(dst_port, 0xFFFF, "dst_port") && in_range(seq, 0xFFFFFFFFL, "seq") &&
               in_range(ack, 0xFFFFFFFFL, "ack") && in_range(flags, 0xFF, "flags") &&
               in_range(window, 0xFFFF, "window")) {
        frame = PyBytes_FromStringAndSize(NULL, ETHERNET + total);
    }
    if (frame == NULL) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    unsigned char *eth = (unsigned char *)PyBytes_AS_STRING(frame);
    unsigned char *ip = eth + ETHERNET;
    unsigned char *tcp = ip + IPV4;
    memcpy(eth, dst_mac, 6);
    memcpy(eth + 6, src_mac, 6);
    put16(eth + 12, 0x0800); /* IPv4 */

    ip[0] = 0x45; /* version 4, 20-byte header */
    ip[1] = 0;    /* TOS */
    put16(ip + 2, (unsigned long)total);
    put16(ip + 4, (unsigned long)ident);
    put16(ip + 6, 0x4000); /* don't fragment */
    ip[8] = 64;            /* TTL */
    ip[9] = 6;             /* TCP */
    put16(ip + 10, 0);
    memcpy(ip + 12, src_ip, 4);
    memcpy(ip + 16, dst_ip, 4);
    put16(ip + 10, checksum_field(ones_complement_sum(ip, IPV4)));

    put16(tcp, (unsigned long)src_port);
    put16(tcp + 2, (unsigned long)dst_port);
    put32(tcp + 4, (unsigned long)seq);
    put32(tcp + 8, (unsigned long)ack);
    tcp[12] = (TCP / 4) << 4; /* data offset: no options */
    tcp[13] = (unsigned char)flags;
    put16(tcp + 14, (unsigned long)window);
    put16(tcp + 16, 0); /* checksum, below */
    put16(tcp + 18, 0); /* urgent pointer */
    memcpy(tcp + TCP, payload.buf, (size_t)payload.len);
    PyBuffer_Release(&payload);
    /* The pseudo-header's words (addresses, protocol, TCP length), then header and payload. */
    uint64_t sum = (uint64_t)ones_complement_sum(ip + 12, 8) + 6 + (uint64_t)(total - IPV4) +
                   ones_complement_sum(tcp, (size_t)(total - IPV4));
    put16(tcp + 16, checksum_field(sum));
    return frame;
}

static PyMethodDef methods[] = {
    {"word_sum", word_sum, METH_O,
     "word_sum(data, /)\n--\n\n"
     "The 16-bit ones' complement sum of data's big-endian 16-bit words (RFC 1071)."},
    {"tcp_in_ipv4", (PyCFunction)(void (*)(void))tcp_in_ipv4, METH_FASTCALL,
     "tcp_in_ipv4(frame, offset, segment_type, /)\n--\n\n"
     "(src, dst, segment) of a well-formed IPv4/TCP packet at frame[offset:], else None."},
    {"tcp_ipv4_frame", tcp_ipv4_frame, METH_VARARGS,
     "tcp_ipv4_frame(dst_mac, src_mac, src_ip, dst_ip, ident, src_port, dst_port, seq, ack, "
     "flags, window, payload, /)\n--\n\n"
     "The Ethernet frame of a TCP segment (no options) in an IPv4 packet, checksums in."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "controlplane.datapath.userspace._speedups",
    .m_doc = "The data path's per-segment hot spots in C (optional; see speedups.py).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    return PyModuleDef_Init(&module_def);
}

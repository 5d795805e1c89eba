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

static PyMethodDef methods[] = {
    {"word_sum", word_sum, METH_O,
     "word_sum(data, /)\n--\n\n"
     "The 16-bit ones' complement sum of data's big-endian 16-bit words (RFC 1071)."},
    {"tcp_in_ipv4", (PyCFunction)(void (*)(void))tcp_in_ipv4, METH_FASTCALL,
     "tcp_in_ipv4(frame, offset, segment_type, /)\n--\n\n"
     "(src, dst, segment) of a well-formed IPv4/TCP packet at frame[offset:], else None."},
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

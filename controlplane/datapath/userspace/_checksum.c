/*
 * The ones' complement sum of RFC 1071 in C: the userspace data path sums every TCP payload
 * twice (the sender for its checksum, the receiver to verify it), and in Python that was a
 * third of the CPU time per segment. Optional: `checksum.py` falls back to pure Python when
 * this module was not built (no compiler), with the same results (tests compare the two).
 *
 * word_sum(data) -> int: the 16-bit ones' complement sum of data's big-endian 16-bit words,
 * a trailing odd byte being the high half of a last word padded with zero. Never 0 unless
 * every byte is 0 (the end-around carry never yields 0 from a non-zero word).
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

static PyMethodDef methods[] = {
    {"word_sum", word_sum, METH_O,
     "word_sum(data, /)\n--\n\n"
     "The 16-bit ones' complement sum of data's big-endian 16-bit words (RFC 1071)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "controlplane.datapath.userspace._checksum",
    .m_doc = "RFC 1071 ones' complement sum in C (optional; checksum.py falls back to Python).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__checksum(void)
{
    return PyModuleDef_Init(&module_def);
}

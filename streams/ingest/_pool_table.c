/* The pool state's table (去重状态表) in C: per collect partition, an open-addressing hash
 * table of 32-byte slots, the key's hash (8 bytes) and its current state header (24 bytes:
 * version, observed-at, fingerprint, big-endian). The same decisions as the pure Python
 * PoolState in pool_state.py, which the tests run against this one; 43 to 86 bytes a key
 * (a table between 3/8 and 3/4 full) against 134 for a dict of int to bytes, and no
 * object made or kept per key.
 *
 * Thread safety: every method runs under the GIL and calls no Python code while it holds
 * a pointer into a table, except restore, which fills a table of its own and swaps it in
 * at the end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define STATE_SIZE 24
#define WHEN_SIZE 16
#define MIN_SLOTS 8

typedef struct {
    uint64_t hash; /* 0: empty */
    unsigned char state[STATE_SIZE];
} Slot;

typedef struct {
    Slot *slots;
    size_t mask; /* slots - 1, a power of two less one */
    size_t used;
} Table;

/* ---- the table ------------------------------------------------------------------ */

static uint64_t
key_hash(PyObject *key, int *err)
{
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1 && PyErr_Occurred()) {
        *err = 1;
        return 0;
    }
    *err = 0;
    uint64_t u = (uint64_t)h;
    return u ? u : 1; /* 0 marks an empty slot */
}

static int
table_init(Table *t, size_t slots)
{
    t->slots = PyMem_RawCalloc(slots, sizeof(Slot));
    if (t->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->mask = slots - 1;
    t->used = 0;
    return 0;
}

static void
table_free(Table *t)
{
    PyMem_RawFree(t->slots);
    t->slots = NULL;
    t->mask = 0;
    t->used = 0;
}

static Slot *
table_find(const Table *t, uint64_t h)
{
    size_t i = (size_t)h & t->mask;
    for (;;) {
        Slot *s = &t->slots[i];
        if (s->hash == h)
            return s;
        if (s->hash == 0)
            return NULL;
        i = (i + 1) & t->mask;
    }
}

/* A slot for a hash not in the table, which has room. */
static Slot *
table_free_slot(const Table *t, uint64_t h)
{
    size_t i = (size_t)h & t->mask;
    while (t->slots[i].hash != 0)
        i = (i + 1) & t->mask;
    return &t->slots[i];
}

static int
table_grow(Table *t)
{
    Table bigger;
    size_t slots = (t->mask + 1) * 2;
    if (slots > ((size_t)PY_SSIZE_T_MAX) / sizeof(Slot)) {
        PyErr_NoMemory();
        return -1;
    }
    if (table_init(&bigger, slots) < 0)
        return -1;
    for (size_t i = 0; i <= t->mask; i++) {
        const Slot *s = &t->slots[i];
        if (s->hash != 0)
            *table_free_slot(&bigger, s->hash) = *s;
    }
    bigger.used = t->used;
    table_free(t);
    *t = bigger;
    return 0;
}

/* Set the state of hash h, adding it if absent. */
static int
table_put(Table *t, uint64_t h, const unsigned char *state)
{
    Slot *s = table_find(t, h);
    if (s == NULL) {
        if ((t->used + 1) * 4 > (t->mask + 1) * 3 && table_grow(t) < 0)
            return -1;
        s = table_free_slot(t, h);
        s->hash = h;
        t->used++;
    }
    memcpy(s->state, state, STATE_SIZE);
    return 0;
}

/* Remove hash h if present: backward-shift deletion, so no probe chain is cut. */
static void
table_remove(Table *t, uint64_t h)
{
    Slot *s = table_find(t, h);
    if (s == NULL)
        return;
    size_t hole = (size_t)(s - t->slots);
    size_t j = hole;
    for (;;) {
        j = (j + 1) & t->mask;
        const Slot *next = &t->slots[j];
        if (next->hash == 0)
            break;
        size_t home = (size_t)next->hash & t->mask;
        /* next stays if its home lies cyclically in (hole, j] */
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!stays) {
            t->slots[hole] = *next;
            hole = j;
        }
    }
    t->slots[hole].hash = 0;
    t->used--;
}

/* ---- one partition's table as a Python object, kept in the state's dict --------- */

typedef struct {
    PyObject_HEAD
    Table table;
} PartObject;

static void
part_dealloc(PartObject *self)
{
    table_free(&self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject PartType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.ingest._pool_table._Partition",
    .tp_basicsize = sizeof(PartObject),
    .tp_dealloc = (destructor)part_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One collect partition's table (internal).",
};

static PartObject *
part_new(size_t slots)
{
    PartObject *p = PyObject_New(PartObject, &PartType);
    if (p == NULL)
        return NULL;
    if (table_init(&p->table, slots) < 0) {
        p->table.slots = NULL;
        Py_DECREF(p);
        return NULL;
    }
    return p;
}

/* ---- the state ----------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *parts;    /* dict: partition -> _Partition */
    PyObject *verdicts; /* (UPDATE, DUPLICATE, STALE, VERSION_CONFLICT) */
} StateObject;

enum { UPDATE, DUPLICATE, STALE, VERSION_CONFLICT };

static int
state_traverse(StateObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->parts);
    Py_VISIT(self->verdicts);
    return 0;
}

static int
state_clear_refs(StateObject *self)
{
    Py_CLEAR(self->parts);
    Py_CLEAR(self->verdicts);
    return 0;
}

static void
state_dealloc(StateObject *self)
{
    PyObject_GC_UnTrack(self);
    state_clear_refs(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
state_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    StateObject *self = (StateObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->parts = PyDict_New();
    if (self->parts == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
state_init(StateObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"verdicts", NULL};
    PyObject *verdicts;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!:PoolTable", kwlist, &PyTuple_Type,
                                     &verdicts))
        return -1;
    if (PyTuple_GET_SIZE(verdicts) != 4) {
        PyErr_SetString(PyExc_ValueError,
                        "verdicts: (UPDATE, DUPLICATE, STALE, VERSION_CONFLICT)");
        return -1;
    }
    Py_INCREF(verdicts);
    Py_XSETREF(self->verdicts, verdicts);
    return 0;
}

static int
check_ready(StateObject *self)
{
    if (self->verdicts == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PoolTable.__init__ was not called");
        return -1;
    }
    return 0;
}

static const unsigned char *
state_bytes(PyObject *state)
{
    if (!PyBytes_Check(state) || PyBytes_GET_SIZE(state) != STATE_SIZE) {
        PyErr_Format(PyExc_ValueError, "a state is %d bytes (pack_state), not %.80R",
                     STATE_SIZE, state);
        return NULL;
    }
    return (const unsigned char *)PyBytes_AS_STRING(state);
}

/* The partition's table, made if absent (new reference). */
static PartObject *
part_of(StateObject *self, PyObject *partition, int create)
{
    PyObject *p = PyDict_GetItemWithError(self->parts, partition);
    if (p != NULL) {
        Py_INCREF(p);
        return (PartObject *)p;
    }
    if (PyErr_Occurred() || !create)
        return NULL;
    if (!PyLong_Check(partition)) {
        PyErr_Format(PyExc_TypeError, "a partition is an int, not %.80R", partition);
        return NULL;
    }
    PartObject *made = part_new(MIN_SLOTS);
    if (made == NULL)
        return NULL;
    if (PyDict_SetItem(self->parts, partition, (PyObject *)made) < 0) {
        Py_DECREF(made);
        return NULL;
    }
    return made;
}

PyDoc_STRVAR(decide_doc,
"decide(partition, key, state) -> (verdict, previous)\n\n"
"The verdict on an incoming version and the state it was compared with (None for a new\n"
"key); an update becomes the current version at once.");

static PyObject *
state_decide(StateObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decide(partition, key, state)");
        return NULL;
    }
    if (check_ready(self) < 0)
        return NULL;
    const unsigned char *st = state_bytes(args[2]);
    if (st == NULL)
        return NULL;
    int err;
    uint64_t h = key_hash(args[1], &err);
    if (err)
        return NULL;
    PartObject *part = part_of(self, args[0], 1);
    if (part == NULL)
        return NULL;
    Table *t = &part->table;
    PyObject *previous = NULL, *result = NULL;
    int verdict;
    Slot *s = table_find(t, h);
    if (s == NULL) {
        if (table_put(t, h, st) < 0)
            goto done;
        verdict = UPDATE;
        previous = Py_NewRef(Py_None);
    }
    else {
        if (memcmp(s->state + WHEN_SIZE, st + WHEN_SIZE, STATE_SIZE - WHEN_SIZE) == 0)
            verdict = DUPLICATE; /* the same content, whatever its version */
        else {
            int c = memcmp(st, s->state, WHEN_SIZE); /* (version, observed-at) */
            verdict = c < 0 ? STALE : c == 0 ? VERSION_CONFLICT : UPDATE;
        }
        previous = PyBytes_FromStringAndSize((const char *)s->state, STATE_SIZE);
        if (previous == NULL)
            goto done;
        if (verdict == UPDATE && table_put(t, h, st) < 0)
            goto done;
    }
    result = PyTuple_Pack(2, PyTuple_GET_ITEM(self->verdicts, verdict), previous);
done:
    Py_XDECREF(previous);
    Py_DECREF(part);
    return result;
}

PyDoc_STRVAR(undo_doc, "undo(partition, key, previous)\n\nPut back the state decide replaced.");

static PyObject *
state_undo(StateObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "undo(partition, key, previous)");
        return NULL;
    }
    const unsigned char *st = NULL;
    if (args[2] != Py_None && (st = state_bytes(args[2])) == NULL)
        return NULL;
    int err;
    uint64_t h = key_hash(args[1], &err);
    if (err)
        return NULL;
    PartObject *part = part_of(self, args[0], st != NULL);
    if (part == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE; /* no table: nothing to take back */
    }
    int rc = 0;
    if (st == NULL)
        table_remove(&part->table, h);
    else
        rc = table_put(&part->table, h, st);
    Py_DECREF(part);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(restore_doc,
"restore(partition, records) -> int\n\n"
"Replace a partition's state with the latest of (key, state header) pairs in log order;\n"
"returns the keys held. A header that is not a state is refused (ValueError).");

static PyObject *
state_restore(StateObject *self, PyObject *args)
{
    PyObject *partition, *records;
    if (!PyArg_ParseTuple(args, "OO:restore", &partition, &records))
        return NULL;
    if (!PyLong_Check(partition)) {
        PyErr_Format(PyExc_TypeError, "a partition is an int, not %.80R", partition);
        return NULL;
    }
    PyObject *it = PyObject_GetIter(records);
    if (it == NULL)
        return NULL;
    PartObject *made = part_new(MIN_SLOTS);
    if (made == NULL) {
        Py_DECREF(it);
        return NULL;
    }
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *key = NULL, *raw = NULL;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError, "restore takes (key, state) pairs, not %.80R", item);
            goto fail;
        }
        key = PyTuple_GET_ITEM(item, 0);
        raw = PyTuple_GET_ITEM(item, 1);
        if (!PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) != STATE_SIZE
            || (unsigned char)PyBytes_AS_STRING(raw)[0] >= 0x80
            || (unsigned char)PyBytes_AS_STRING(raw)[8] >= 0x80) {
            PyErr_Format(PyExc_ValueError,
                         "pool record %.80R has a xy-state header of %zd bytes that is not a "
                         "state (24 bytes, non-negative version and time)",
                         key, PyBytes_Check(raw) ? PyBytes_GET_SIZE(raw) : (Py_ssize_t)-1);
            goto fail;
        }
        int err;
        uint64_t h = key_hash(key, &err);
        if (err || table_put(&made->table, h, (const unsigned char *)PyBytes_AS_STRING(raw)) < 0)
            goto fail;
        Py_DECREF(item);
        continue;
    fail:
        Py_DECREF(item);
        Py_DECREF(it);
        Py_DECREF(made);
        return NULL;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        Py_DECREF(made);
        return NULL;
    }
    size_t held = made->table.used;
    int rc = PyDict_SetItem(self->parts, partition, (PyObject *)made);
    Py_DECREF(made);
    if (rc < 0)
        return NULL;
    return PyLong_FromSize_t(held);
}

PyDoc_STRVAR(drop_doc, "drop(partitions)\n\nForget these partitions' state.");

static PyObject *
state_drop(StateObject *self, PyObject *partitions)
{
    PyObject *it = PyObject_GetIter(partitions);
    if (it == NULL)
        return NULL;
    PyObject *p;
    while ((p = PyIter_Next(it)) != NULL) {
        int rc = PyDict_DelItem(self->parts, p);
        Py_DECREF(p);
        if (rc < 0 && PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear(); /* not held: nothing to drop */
            rc = 0;
        }
        if (rc < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
state_clear(StateObject *self, PyObject *Py_UNUSED(ignored))
{
    PyDict_Clear(self->parts);
    Py_RETURN_NONE;
}

static PyObject *
state_partitions(StateObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *keys = PyDict_Keys(self->parts);
    if (keys == NULL)
        return NULL;
    if (PyList_Sort(keys) < 0) {
        Py_DECREF(keys);
        return NULL;
    }
    return keys;
}

PyDoc_STRVAR(nbytes_doc, "nbytes() -> int\n\nBytes the tables hold (slots), all partitions.");

static PyObject *
state_nbytes(StateObject *self, PyObject *Py_UNUSED(ignored))
{
    size_t n = 0;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(self->parts, &pos, &k, &v))
        n += (((PartObject *)v)->table.mask + 1) * sizeof(Slot) + sizeof(PartObject);
    return PyLong_FromSize_t(n);
}

static Py_ssize_t
state_len(StateObject *self)
{
    size_t n = 0;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(self->parts, &pos, &k, &v))
        n += ((PartObject *)v)->table.used;
    return (Py_ssize_t)n;
}

static PyMethodDef state_methods[] = {
    {"decide", (PyCFunction)(void (*)(void))state_decide, METH_FASTCALL, decide_doc},
    {"undo", (PyCFunction)(void (*)(void))state_undo, METH_FASTCALL, undo_doc},
    {"restore", (PyCFunction)state_restore, METH_VARARGS, restore_doc},
    {"drop", (PyCFunction)state_drop, METH_O, drop_doc},
    {"clear", (PyCFunction)state_clear, METH_NOARGS, "clear()\n\nForget every partition."},
    {"partitions", (PyCFunction)state_partitions, METH_NOARGS,
     "partitions() -> list\n\nThe partitions held, sorted."},
    {"nbytes", (PyCFunction)state_nbytes, METH_NOARGS, nbytes_doc},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods state_as_sequence = {
    .sq_length = (lenfunc)state_len,
};

static PyTypeObject StateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.ingest._pool_table.PoolTable",
    .tp_basicsize = sizeof(StateObject),
    .tp_dealloc = (destructor)state_dealloc,
    .tp_as_sequence = &state_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "PoolTable(verdicts)\n\nCurrent state header per key hash, per partition.",
    .tp_traverse = (traverseproc)state_traverse,
    .tp_clear = (inquiry)state_clear_refs,
    .tp_methods = state_methods,
    .tp_init = (initproc)state_init,
    .tp_new = state_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streams.ingest._pool_table",
    .m_doc = "The pool state's table in C (see streams.ingest.pool_state).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__pool_table(void)
{
    if (PyType_Ready(&PartType) < 0 || PyType_Ready(&StateType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&StateType);
    if (PyModule_AddObject(m, "PoolTable", (PyObject *)&StateType) < 0) {
        Py_DECREF(&StateType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

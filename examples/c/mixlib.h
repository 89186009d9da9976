/*
 * The interface of mixlib.c: LIB_FN(outer) is LIB_outer, for the prefix LIB given with -DLIB=name.
 */
#ifndef EXAMPLES_MIXLIB_H
#define EXAMPLES_MIXLIB_H

#define LIB_CONCAT_(prefix, name) prefix##_##name
#define LIB_CONCAT(prefix, name) LIB_CONCAT_(prefix, name)
#define LIB_FN(name) LIB_CONCAT(LIB, name)

unsigned long LIB_FN(outer)(unsigned long seed);

#endif

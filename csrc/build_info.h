// What both binding files report about their build, so the loader
// (colbert/search/extensions.py) can reject a stale or foreign ahead-of-time module.
#pragma once

// setup.py passes these as bare tokens (-DCOLBERT_TAP_TORCH_VERSION=2.13.0+cpu):
// quoted string macros do not survive the shell quoting of a ninja build.
#define COLBERT_TAP_STR_(x) #x
#define COLBERT_TAP_STR(x) COLBERT_TAP_STR_(x)
#ifdef COLBERT_TAP_SOURCE_HASH
#define COLBERT_TAP_SOURCE_HASH_STR COLBERT_TAP_STR(COLBERT_TAP_SOURCE_HASH)
#else
#define COLBERT_TAP_SOURCE_HASH_STR ""
#endif
#ifdef COLBERT_TAP_TORCH_VERSION
#define COLBERT_TAP_TORCH_VERSION_STR COLBERT_TAP_STR(COLBERT_TAP_TORCH_VERSION)
#else
#define COLBERT_TAP_TORCH_VERSION_STR ""
#endif

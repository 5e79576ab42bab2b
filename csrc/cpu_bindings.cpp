// The one Python module for all CPU kernels (colbert._ext_cpu when built ahead
// of time, colbert_tap_cpu when JIT-built).  Every entry point releases the
// GIL: arguments are converted before the release and the result after it, so
// only tensor data is touched without the GIL.
#include "colbert_tap.h"

#include "build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "colbert-tap CPU kernels (search, and the codec's nearest centroid); see colbert/search/extensions.py";
  // Read by the loader to reject an ahead-of-time build that is stale with
  // respect to the sources or was compiled against another torch.
  m.attr("SOURCE_HASH") = COLBERT_TAP_SOURCE_HASH_STR;
  m.attr("TORCH_VERSION") = COLBERT_TAP_TORCH_VERSION_STR;

  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("segmented_maxsim", &colbert_tap::segmented_maxsim, py::arg("scores"),
        py::arg("lengths"), nogil);
  m.def("column_argmax", &colbert_tap::column_argmax, py::arg("scores"), nogil);
  m.def("segmented_lookup", &colbert_tap::segmented_lookup, py::arg("packed"),
        py::arg("offsets"), py::arg("lengths"), py::arg("ids"), nogil);
  m.def("filter_pids", &colbert_tap::filter_pids, py::arg("pids"), py::arg("centroid_scores"),
        py::arg("codes"), py::arg("doclens"), py::arg("offsets"), py::arg("keep"),
        py::arg("ndocs"), nogil);
  m.def("decompress_rows", &colbert_tap::decompress_rows, py::arg("codes"),
        py::arg("residuals"), py::arg("centroids"), py::arg("bucket_weights"), py::arg("nbits"),
        nogil);
  m.def("decompress_residuals", &colbert_tap::decompress_residuals, py::arg("pids"),
        py::arg("doclens"), py::arg("offsets"), py::arg("codes"), py::arg("residuals"),
        py::arg("centroids"), py::arg("bucket_weights"), py::arg("nbits"), nogil);
}

"""The kernel data path backend (Linux, root): network namespaces, bridges, VXLAN devices,
static FDB and neighbour entries with pyroute2 (`backend`), xfrm for encrypted networks where
the kernel has ESP/GCM (`xfrm`), namespaces (`namespaces`)."""

from controlplane.datapath.kernel.backend import KernelBackend
from controlplane.datapath.kernel.namespaces import KernelError, kernel_datapath_unavailable

__all__ = ["KernelBackend", "KernelError", "kernel_datapath_unavailable"]

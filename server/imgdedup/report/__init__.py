"""`dedup report`: a self-contained HTML gallery of the clusters, for a person deciding what to
delete, and a PNG contact sheet per cluster.

The server keeps embeddings, not pixels, so the report is made by the CLI from the image files:
each stored image id is looked up under the folder given (`dedup index DIR` stores the paths
relative to DIR as ids). Output, all relative links, nothing fetched over a network:

    OUT/index.html, OUT/page-2.html, ...   clusters, largest first, `page_size` a page
    OUT/thumbs/*.jpg                       thumbnails (longest side 200 px)
    OUT/sheets/<cluster>.png               one contact sheet per cluster
"""

from imgdedup.report.gallery import Member, ReportCluster, build_report, clusters_from_server

__all__ = ["Member", "ReportCluster", "build_report", "clusters_from_server"]

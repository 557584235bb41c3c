"""``lightseg data check``: a data set read as training reads it, its problems named with their files.

:mod:`~lightseg.data_check.checker` reads the data, :mod:`~lightseg.data_check.report` writes the
tables, the JSON report and the picture.
"""

from lightseg.data_check.checker import check_data, unreadable_data
from lightseg.data_check.report import DataReport, format_report, write_report

__all__ = ["DataReport", "check_data", "format_report", "unreadable_data", "write_report"]

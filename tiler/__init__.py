"""vna's slide tiler: any brightfield WSI -> a sharded OME-Zarr (NGFF 0.5) pyramid of JPEG tiles.

Importing the package registers the JPEG chunk codec with zarr, so zarr-python can
read every pyramid written here.
"""

from tiler.codec import CODEC_NAME, JpegCodec, register
from tiler.geometry import Level, Pyramid, dzi_max_level, level_count, level_size
from tiler.jpeg import crop_jpeg_lossless, decode_jpeg, encode_tile
from tiler.pyramid import PyramidInfo, build_pyramid
from tiler.reader import (
    PyramidReader,
    dzi_tile,
    dzi_xml,
    forget_reader,
    open_reader,
    read_tile,
    region,
)
from tiler.shard import build_shard, shard_index
from tiler.sources import SlideSource, open_slide

register()

__all__ = [
    "CODEC_NAME",
    "JpegCodec",
    "Level",
    "Pyramid",
    "PyramidInfo",
    "PyramidReader",
    "SlideSource",
    "build_pyramid",
    "build_shard",
    "crop_jpeg_lossless",
    "decode_jpeg",
    "dzi_max_level",
    "dzi_tile",
    "dzi_xml",
    "encode_tile",
    "forget_reader",
    "level_count",
    "level_size",
    "open_reader",
    "open_slide",
    "read_tile",
    "region",
    "register",
    "shard_index",
]

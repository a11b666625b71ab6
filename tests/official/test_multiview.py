"""The official 3D input (``atoken.modalities.mesh.official_layout``, ``official_packing``) and
the mesh family's renders in its layout (``atoken.modalities.mesh.official_views``, ``atoken
data export-views``).

* round trip: renders written in the layout read back as the same images, depth and cameras;
* the camera convention: a known point projects, and a known depth lifts, where the official
  script puts them (OpenGL c2w in the file, OpenCV w2c inside, corner-based normalised pixels);
* the voxel features against a reference written here with loops (the official rule as the
  module docstring states it, computed independently);
* how they relate to atoken's own mesh path on the same views (where the official rule
  differs by design, exactly how);
* the errors for a bad folder;
* parity with the official script itself (``pack_multiview_feat.py``), where it imports from
  ``ATOKEN_OFFICIAL_CODE`` (an apple/ml-atoken checkout plus stand-ins for ``cv2`` and
  ``utils3d.torch.intrinsics_from_fov_xy``, which it imports but this path never calls or which
  are one formula; see docs/3d.md). Skipped otherwise.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from atoken.core.errors import ConfigError, ModalityInputError, OutputFolderError
from atoken.modalities.mesh.cameras import camera_centers, sphere_cameras
from atoken.modalities.mesh.official_layout import load_views, read_depth
from atoken.modalities.mesh.official_packing import surface_points, voxel_features
from atoken.modalities.mesh.official_views import write_official_views, write_views
from atoken.modalities.mesh.voxelize import voxelize
from tests.official.official_code import import_official


def _mesh(seed: int = 0):
    """A box and an off-centre sphere with random face colours (not convex: some voxels are
    hidden from some views)."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2)
    sphere.apply_translation([0.3, -0.2, 0.1])
    mesh = trimesh.util.concatenate([sphere, trimesh.creation.box(extents=[0.8, 0.3, 1.2])])
    rng = np.random.default_rng(seed)
    mesh.visual.face_colors = rng.integers(0, 256, (len(mesh.faces), 4)).astype(np.uint8)
    return mesh


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """(folder, rendered Views): 4 views of 64 px in the official layout."""
    folder = tmp_path_factory.mktemp("views") / "object"
    views = write_official_views(_mesh(), folder, views=4, size=64)
    return folder, views


@pytest.fixture(scope="module")
def layout256(tmp_path_factory):
    """4 views of 256 px: the official feature images are the renders themselves."""
    folder = tmp_path_factory.mktemp("views256") / "object"
    views = write_official_views(_mesh(1), folder, views=4, size=256)
    return folder, views


# ------------------------------------------------------------------ round trip
def test_written_views_read_back_as_the_renders(layout):
    folder, views = layout
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["000.png", "000_depth.npy", "001.png", "001_depth.npy", "002.png",
                     "002_depth.npy", "003.png", "003_depth.npy", "transforms.json"]  # fmt: skip
    back = load_views(folder)
    assert back.count == 4 and back.names == ("000.png", "001.png", "002.png", "003.png")
    seen = views.depth > 0  # [V, H, W]
    rgb = (views.rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # [V, H, W, 3]
    images = torch.from_numpy(np.stack(back.images))  # [V, H, W, 4]
    assert torch.equal(images[..., :3], rgb * seen[..., None])
    assert torch.equal(images[..., 3], seen.to(torch.uint8) * 255)
    assert torch.equal(back.depth, torch.where(seen, views.depth, torch.tensor(-1.0)))
    again = back.to_views()
    assert torch.equal(again.depth, views.depth)
    assert torch.equal(again.rgb, (rgb * seen[..., None]).permute(0, 3, 1, 2).float() / 255)
    cam, ref = again.camera, views.camera
    assert torch.allclose(cam.intrinsics, ref.intrinsics, atol=1e-4)
    assert torch.allclose(cam.extrinsics, ref.extrinsics, atol=1e-5)
    doc = json.loads((folder / "transforms.json").read_text())
    assert doc["camera_angle_x"] == pytest.approx(math.radians(40))
    assert [f["file_path"] for f in doc["frames"]] == list(back.names)


def test_the_atoken_mesh_path_on_read_back_views_matches_the_renders(layout):
    folder, views = layout
    again = voxelize(load_views(folder).to_views(), resolution=16)
    direct = voxelize(views, resolution=16)
    assert torch.equal(again.coords, direct.coords)
    assert torch.allclose(again.patches, direct.patches, atol=1 / 255)  # 8-bit PNG


def test_export_views_command(tmp_path):
    import trimesh

    from atoken.cli import main

    path = tmp_path / "box.ply"
    trimesh.creation.box().export(path)
    out = tmp_path / "out"
    args = ["data", "export-views", str(path), str(out), "--views", "3", "--size", "32"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "wrote 3 views of 32 x 32 px" in result.output
    assert load_views(out).count == 3
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code != 0 and "OutputFolderError" in result.output
    result = CliRunner().invoke(main, [*args, "--overwrite"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------ the camera convention
def _one_camera(folder, depth: np.ndarray, fov: float = math.radians(40)):
    """A camera at (0, 0, 2) looking down -z at the origin (OpenGL c2w: the identity rotation),
    world +x to the image's right and +y up."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]
    doc = {"camera_angle_x": fov, "frames": [{"file_path": "000.png", "transform_matrix": c2w}]}
    (folder / "transforms.json").write_text(json.dumps(doc))
    Image.new("RGB", depth.shape[::-1]).save(folder / "000.png")
    np.save(folder / "000_depth.npy", depth.astype(np.float32))
    return load_views(folder)


def test_a_known_point_projects_where_the_official_convention_puts_it(tmp_path):
    fov = math.radians(40)
    views = _one_camera(tmp_path / "cam", np.full((8, 8), 2.0), fov)
    f = 0.5 / math.tan(fov / 2)
    point = torch.tensor([0.1, 0.2, 0.0, 1.0])  # right of and above the origin
    cam = views.w2c()[0] @ point  # OpenCV camera: y down, z forward
    assert torch.allclose(cam[:3], torch.tensor([0.1, -0.2, 2.0]), atol=1e-6)
    uvw = views.intrinsics()[0] @ cam[:3]
    uv = uvw[:2] / uvw[2]
    assert torch.allclose(uv, torch.tensor([0.5 + f * 0.05, 0.5 - f * 0.1]), atol=1e-6)


def test_depth_lifts_from_pixel_corners(tmp_path):
    """A flat depth of 2 lifts onto the plane z = 0; pixel (row i, column j) at the normalised
    corner (j / W, i / H): pixel (4, 4) of 8 on the axis, pixel (0, 0) at the top-left corner."""
    fov = math.radians(40)
    views = _one_camera(tmp_path / "cam", np.full((8, 8), 2.0), fov)
    points = surface_points(views).reshape(8, 8, 3)  # [H, W, 3]
    assert torch.allclose(points[..., 2], torch.zeros(8, 8), atol=1e-6)
    assert torch.allclose(points[4, 4], torch.zeros(3), atol=1e-6)
    edge = 2 * math.tan(fov / 2)
    assert torch.allclose(points[0, 0], torch.tensor([-edge, edge, 0.0]), atol=1e-5)


def test_negative_depth_is_no_surface_and_zero_depth_the_camera_centre(tmp_path):
    depth = np.full((4, 4), -1.0)
    depth[1, 2], depth[3, 0] = 2.0, 0.0
    points = surface_points(_one_camera(tmp_path / "cam", depth))
    assert points.shape == (2, 3)
    assert torch.allclose(points[1], torch.tensor([0.0, 0.0, 2.0]))


def test_no_surface_gives_no_voxels(tmp_path):
    vox = voxel_features(_one_camera(tmp_path / "cam", np.full((16, 16), -1.0)), resolution=8)
    assert vox.coords.shape == (0, 3) and vox.feats.shape == (0, 768)
    values, coords = vox.encoder_input()
    assert values.shape == (0, 3072) and coords.shape == (0, 5)


def test_writer_cameras_are_opengl_c2w(layout):
    folder, views = layout
    doc = json.loads((folder / "transforms.json").read_text())
    for frame, centre in zip(doc["frames"], camera_centers(views.camera), strict=True):
        c2w = torch.tensor(frame["transform_matrix"])
        assert torch.allclose(c2w[:3, 3], centre, atol=1e-5)
        backward = c2w[:3, 2]  # OpenGL: the camera looks down -z
        assert torch.allclose(-backward, -centre / centre.norm(), atol=1e-5)  # at the origin


# ------------------------------------------------------------------ features: the reference
def _reference(views, resolution: int, image_size: int = 256, p: int = 16):
    """The official rule computed independently, with loops over pixels and voxels in float64
    (module docstring of official_packing): (coords list, feats [M, 768])."""
    k = views.intrinsics().double().numpy()
    w2c = views.w2c().double().numpy()
    depth = views.depth.double().numpy()
    n, h, w = depth.shape
    points = []
    for v in range(n):
        c2w = np.linalg.inv(w2c[v])
        kinv = np.linalg.inv(k[v])
        for i in range(h):
            for j in range(w):
                d = depth[v, i, j]
                if d < 0:
                    continue
                cam = kinv @ np.array([j / w * d, i / h * d, d])
                points.append((c2w @ np.append(cam, 1))[:3])
    points = np.array(points)
    size = 1 / resolution
    centres = (np.arange(resolution) + 0.5) * size - 0.5
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
    occupied = np.zeros(len(grid), bool)
    for start in range(0, len(points), 256):
        near = np.abs(grid[None] - points[start : start + 256, None]) <= size / 2 + 1e-9
        occupied |= near.all(-1).any(0)
    images = views.feature_images(image_size).double().numpy()  # [V, 3, I, I]
    s = image_size // p
    coords, feats, ties = [], [], 0
    for flat in np.flatnonzero(occupied):
        x, y, z = np.unravel_index(flat, (resolution,) * 3)
        centre = np.append(grid[flat], 1)
        best, best_z, best_uv = -1, np.inf, None
        for v in range(n):
            cam = (w2c[v] @ centre)[:3]
            if cam[2] < best_z:
                proj = k[v] @ cam
                best, best_z, best_uv = v, cam[2], proj[:2] / proj[2]
        pos = best_uv * (s - 1)
        ties += int((np.abs(pos - np.floor(pos) - 0.5) < 1e-4).any())
        col, row = np.round(pos).astype(int)  # numpy rounds half to even, as grid_sample
        if 0 <= row < s and 0 <= col < s:
            cell = images[best, :, row * p : (row + 1) * p, col * p : (col + 1) * p]  # [3, p, p]
            feats.append(cell.transpose(1, 2, 0).reshape(-1))  # (row, column, channel)
        else:
            feats.append(np.zeros(p * p * 3))
        coords.append((x, y, z))
    return coords, np.array(feats), ties


def test_voxel_features_match_the_loop_reference(layout):
    folder, _ = layout
    views = load_views(folder)
    ours = voxel_features(views, resolution=12)
    coords, feats, ties = _reference(views, 12)
    assert ours.coords.dtype == torch.int32 and ours.feats.shape == (len(coords), 768)
    assert ours.coords.tolist() == [list(c) for c in coords]  # raster order, x slowest
    assert ties == 0  # no voxel centre projects onto a cell boundary here
    assert np.abs(ours.feats.double().numpy() - feats).max() < 1e-6


def test_encoder_input_and_the_mesh_familys_voxels(layout):
    folder, _ = layout
    ours = voxel_features(load_views(folder), resolution=12)
    values, coords = ours.encoder_input(sample=3)
    m = len(ours)
    assert values.shape == (m, 3072) and coords.shape == (m, 5) and coords.dtype == torch.int32
    assert torch.equal(values[:, :768], ours.feats.half().float() * 2 - 1)
    assert torch.equal(values[:, 768:], torch.zeros(m, 3072 - 768))
    assert coords[:, :2].tolist() == [[3, 1]] * m and torch.equal(coords[:, 2:], ours.coords)
    voxels = ours.to_voxels()
    assert torch.equal(voxels.coords, ours.coords) and voxels.patches.shape == (m, 16, 16, 3)
    assert torch.equal(voxels.patches[:, 2, 5], ours.feats.reshape(m, 16, 16, 3)[:, 2, 5])
    with pytest.raises(ConfigError, match="in_channels 100"):
        ours.encoder_input(in_channels=100)


def test_subsampling_keeps_max_points(layout):
    folder, _ = layout
    views = load_views(folder)
    everything = surface_points(views, max_points=None)
    g = torch.Generator().manual_seed(0)
    some = surface_points(views, max_points=100, generator=g)
    assert some.shape == (100, 3) and everything.shape[0] > 100
    assert bool((some[:, None] == everything[None]).all(-1).any(1).all())


# ------------------------------------------------------------------ against atoken's mesh path
def test_how_the_official_rule_differs_from_the_mesh_path(layout256):
    """Same 256 px views, same cameras. (1) occupancy: the official points are the mesh path's
    back-projection with the principal point moved half a pixel (cx = W / 2: pixel corners,
    not centres) and boundaries included; (2) features: the official feature is the cell of
    the fixed 16 x 16 patch grid at round(15 (u + 0.5) / W) of the voxel centre's projection
    (u, v) in pixels of the mesh path's camera, in the nearest view; the mesh path takes the
    16 x 16 window centred on round(u) instead."""
    from kornia.geometry.camera import PinholeCamera

    folder, views = layout256
    official = voxel_features(load_views(folder), resolution=24)
    cam = views.camera
    shifted_k = cam.intrinsics.clone()
    shifted_k[:, 0, 2] += 0.5
    shifted_k[:, 1, 2] += 0.5
    shifted = PinholeCamera(shifted_k, cam.extrinsics, cam.height, cam.width)
    from atoken.modalities.mesh.views import Views

    mesh_path = voxelize(Views(rgb=views.rgb, depth=views.depth, camera=shifted), resolution=24)
    ours_set = set(map(tuple, official.coords.tolist()))
    mesh_set = set(map(tuple, mesh_path.coords.tolist()))
    assert ours_set == mesh_set  # (measured: also at 64^3 with 16 views, 19198 voxels)

    unshifted = voxelize(views, resolution=24)  # the mesh path as it is: close, not equal
    plain = set(map(tuple, unshifted.coords.tolist()))
    assert len(plain ^ ours_set) < 0.1 * len(ours_set)

    centres = (official.coords.float() + 0.5) / 24 - 0.5  # [M, 3]
    world = centres[None].expand(4, -1, -1)  # [V, M, 3]
    local = torch.einsum("vij,vmj->vmi", cam.extrinsics[:, :3, :3], world)
    local = local + cam.extrinsics[:, None, :3, 3]  # [V, M, 3]
    nearest = local[..., 2].argmin(0)  # [M]
    at = torch.arange(len(official))
    pixel = cam.project(world)[nearest, at]  # [M, 2] (u, v) in the mesh path's pixels
    position = 15 * (pixel + 0.5) / 256  # [M, 2] in cells of the official grid
    tie = ((position - position.floor() - 0.5).abs() < 1e-4).any(1)  # [M] float error decides
    cell = torch.round(position).long()  # [M, 2] (column, row)
    image = views.rgb.permute(0, 2, 3, 1)  # [V, H, W, 3]
    expected = torch.stack(
        [
            image[v, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16].reshape(-1)
            for v, (c, r) in zip(nearest.tolist(), cell.tolist(), strict=True)
        ]
    )  # [M, 768]
    rgb8 = (expected * 255).round() / 255  # the PNG's 8 bits
    close = (official.feats - rgb8).abs().amax(1) < 1e-6  # [M]
    assert bool(close[~tie].all()) and int(tie.sum()) <= len(tie) // 100  # measured: all equal


# ------------------------------------------------------------------ errors
def _copy(folder, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_bad_folders_name_the_file_and_the_problem(layout, tmp_path):
    folder, _ = layout
    with pytest.raises(ModalityInputError, match="is not a folder"):
        load_views(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModalityInputError, match=r"no transforms\.json"):
        load_views(empty)
    bad = _copy(folder, tmp_path)
    (bad / "transforms.json").write_text("{not json")
    with pytest.raises(ModalityInputError, match=r"transforms\.json is not JSON"):
        load_views(bad)
    (bad / "transforms.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(ModalityInputError, match="no 'frames' list"):
        load_views(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "002.png").unlink(), "frame 2: image 002.png .* is missing"),
        (lambda d: (d / "001_depth.npy").unlink(), "frame 1: no depth map 001_depth.npy"),
        (
            lambda d: np.save(d / "003_depth.npy", np.full((64, 64), np.nan, np.float32)),
            "003_depth.npy: 4096 non-finite values",
        ),
        (
            lambda d: np.save(d / "001_depth.npy", np.zeros((32, 32), np.float32)),
            "depth map 001_depth.npy is 32 x 32, 000_depth.npy 64 x 64",
        ),
        (
            lambda d: __import__("PIL.Image").Image.new("RGB", (64, 48)).save(d / "000.png"),
            "image 001.png is 64 x 64, 000.png 48 x 64",
        ),
        (lambda d: (d / "001.png").write_bytes(b"not a png"), "001.png is not a readable image"),
        (lambda d: np.save(d / "000_depth.npy", np.zeros(5)), "must be a 2-D numeric array"),
    ],
)
def test_bad_frames_name_the_file(layout, tmp_path, change, message):
    bad = _copy(layout[0], tmp_path)
    change(bad)
    with pytest.raises(ModalityInputError, match=message):
        load_views(bad)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"transform_matrix": np.eye(4).tolist()}, "frame 0 has no 'file_path'"),
        ({"file_path": "000.png", "transform_matrix": [[1, 2]]}, "4 x 4 finite numbers"),
        ({"file_path": "000.png", "transform_matrix": np.zeros((4, 4)).tolist()}, "singular"),
        (
            {"file_path": "000.png", "transform_matrix": np.eye(4).tolist(), "camera_angle_x": 4},
            "camera_angle_x must be radians",
        ),
    ],
)
def test_bad_cameras_name_the_frame(layout, tmp_path, frame, message):
    bad = _copy(layout[0], tmp_path)
    doc = json.loads((bad / "transforms.json").read_text())
    doc["frames"][0] = frame
    (bad / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(ModalityInputError, match=message):
        load_views(bad)


def test_a_missing_camera_angle_falls_back_to_the_top_level_one(layout, tmp_path):
    bad = _copy(layout[0], tmp_path)
    doc = json.loads((bad / "transforms.json").read_text())
    for frame in doc["frames"]:
        del frame["camera_angle_x"]
    (bad / "transforms.json").write_text(json.dumps(doc))
    assert torch.allclose(
        load_views(bad).fov_x, torch.full((4,), math.radians(40), dtype=torch.float64)
    )
    del doc["camera_angle_x"]
    (bad / "transforms.json").write_text(json.dumps(doc))
    with pytest.raises(ModalityInputError, match="frame 0: camera_angle_x"):
        load_views(bad)


def test_exr_without_openexr_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "OpenEXR", None)  # import fails
    (tmp_path / "000_depth.exr").write_bytes(b"")
    with pytest.raises(ModalityInputError, match="pip install OpenEXR"):
        read_depth(tmp_path / "000_depth.exr")


def test_exr_depth_as_the_official_conversion(tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    depth = np.array([[1.5, 2.0], [1e10, 3.25]], np.float32)
    header = {"compression": openexr.ZIP_COMPRESSION, "type": openexr.scanlineimage}
    with openexr.File(header, {"Z": depth}) as exr:
        exr.write(str(tmp_path / "000_depth.exr"))
    read = read_depth(tmp_path / "000_depth.exr")
    assert read.dtype == np.float32 and read.tolist() == [[1.5, 2.0], [-1.0, 3.25]]
    (tmp_path / "001_depth.exr").write_bytes(b"not an exr")
    with pytest.raises(ModalityInputError, match=r"001_depth\.exr: not a readable \.exr file"):
        read_depth(tmp_path / "001_depth.exr")


def test_bad_settings_and_output_folders(layout, tmp_path):
    views = load_views(layout[0])
    with pytest.raises(ConfigError, match="resolution must be an int >= 1"):
        voxel_features(views, resolution=0)
    with pytest.raises(ConfigError, match="not a multiple of patch"):
        voxel_features(views, image_size=250)
    with pytest.raises(OutputFolderError, match="holds 9 entries"):
        write_views(layout[1], layout[0])
    from atoken.modalities.mesh.views import Views

    wide = Views(
        rgb=torch.zeros(1, 3, 8, 8), depth=torch.zeros(1, 8, 8), camera=sphere_cameras(1, 8)
    )
    wide.camera.intrinsics[:, 0, 2] += 1  # off-centre principal point
    with pytest.raises(ModalityInputError, match="centred cameras"):
        write_views(wide, tmp_path / "wide")


# ------------------------------------------------------------------ the official script
def _official():
    (script,) = import_official("atoken_inference.scripts.pack_multiview_feat")
    return script


def test_parity_with_the_official_packing_script(layout):
    official = _official()
    from PIL import Image

    folder, _ = layout
    intr, w2c = official.convert_cam_poses(str(folder / "transforms.json"))
    images = [Image.open(folder / f"{i:03d}.png") for i in range(4)]
    depth = np.stack([np.load(folder / f"{i:03d}_depth.npy") for i in range(4)])
    feats, coords = official.compute_feat_coords_pair(
        all_images=images, all_depth=depth, all_w2c=w2c, all_intrinsics=intr,
        vol_resolution=16, bounding_radius=0.5,
    )  # fmt: skip
    ours = voxel_features(load_views(folder), resolution=16)
    assert torch.equal(ours.coords, coords.int().cpu())
    diff = float((ours.feats - feats.float().cpu()).abs().max())
    print(f"\nofficial packing parity: {len(coords)} voxels, features max |diff| {diff:.1e}")
    assert diff == 0

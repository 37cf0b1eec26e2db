import math

import numpy as np
import pytest

from caloforge.geometry import (
    PRESET_NAMES,
    CylindricalGeometry,
    GeometryError,
    geometry_from_dict,
    get_geometry,
    ild_ecal,
    read_binning_xml,
)

XML_FILES = {
    "ds1-photons": "binning_dataset_1_photons.xml",
    "ds1-pions": "binning_dataset_1_pions.xml",
    "ds2": "binning_dataset_2.xml",
    "ds3": "binning_dataset_3.xml",
}
N_VOXELS = {"ds1-photons": 368, "ds1-pions": 533, "ds2": 6480, "ds3": 40500}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_equals_official_xml_voxel_by_voxel(name, binning_dir):
    preset = get_geometry(name)
    official = read_binning_xml(binning_dir / XML_FILES[name])
    assert preset.n_voxels == official.n_voxels == N_VOXELS[name]
    assert preset.same_binning(official)
    for attr in ("voxel_layer", "voxel_alpha", "voxel_r", "r_centres", "alpha_centres", "eta", "phi"):
        np.testing.assert_array_equal(getattr(preset, attr), getattr(official, attr), err_msg=attr)
    assert preset.particle == official.particle


def test_regular_shapes():
    assert get_geometry("ds2").image_shape == (45, 16, 9)
    assert get_geometry("ds3").image_shape == (45, 50, 18)
    with pytest.raises(GeometryError, match="irregular"):
        _ = get_geometry("ds1-photons").image_shape


def test_ds1_active_layers():
    assert get_geometry("ds1-photons").active_layers == (0, 1, 2, 3, 12)
    assert get_geometry("ds1-pions").active_layers == (0, 1, 2, 3, 12, 13, 14)
    assert get_geometry("ds1-pions").alpha_binned_layers == (1, 2, 12, 13)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_index_round_trip(name):
    g = get_geometry(name)
    idx = np.arange(g.n_voxels)
    layer, alpha, r = g.unravel(idx)
    np.testing.assert_array_equal(g.voxel_index(layer, alpha, r), idx)


def test_calochallenge_order_layer_alpha_r():
    g = get_geometry("ds2")
    # (layer * 16 + alpha) * 9 + r, the order of the official files
    assert int(g.voxel_index(3, 5, 7)) == (3 * 16 + 5) * 9 + 7
    img = np.arange(g.n_voxels).reshape(1, -1)
    assert g.to_image(img)[0, 3, 5, 7] == (3 * 16 + 5) * 9 + 7
    np.testing.assert_array_equal(g.from_image(g.to_image(img)), img)


def test_cell_coordinates_known_values():
    g = get_geometry("ds2")
    # first voxel: r mid 2.325 mm, alpha centre -pi + pi/16
    a = -math.pi + math.pi / 16
    assert g.r_centres[0] == pytest.approx(2.325)
    assert g.eta[0] == pytest.approx(2.325 * math.cos(a))
    assert g.phi[0] == pytest.approx(2.325 * math.sin(a))


def test_layer_energies_and_empty_layers():
    g = get_geometry("ds1-photons")
    x = np.zeros((2, g.n_voxels))
    x[:, g.layer_slice(12)] = 1.0
    e = g.layer_energies(x)
    assert e.shape == (2, 24)
    assert e[0, 12] == 5 and e[0].sum() == 5


def test_dict_round_trip_and_unknown_keys():
    for name in PRESET_NAMES:
        g = get_geometry(name)
        assert geometry_from_dict(g.to_dict()) == g
    d = get_geometry("ds2").to_dict()
    d["colour"] = "red"
    with pytest.raises(GeometryError, match="colour"):
        geometry_from_dict(d)
    p = ild_ecal()
    assert geometry_from_dict(p.to_dict()) == p


def test_unknown_preset_message_lists_known():
    with pytest.raises(GeometryError, match="ds2"):
        get_geometry("ds4")


@pytest.mark.parametrize("kwargs,match", [
    (dict(r_edges=((0, 2, 1),), n_alpha=(1,)), "increase"),
    (dict(r_edges=((0, 1),), n_alpha=(0,)), "n_alpha"),
    (dict(r_edges=((0, 1), (0, 1)), n_alpha=(1,)), "angular"),
    (dict(r_edges=((0,),), n_alpha=(1,)), "no voxels"),
])
def test_malformed_geometries(kwargs, match):
    with pytest.raises(GeometryError, match=match):
        CylindricalGeometry("bad", **kwargs)


def test_bad_xml(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text("<Bins><Bin><Layer id='0' r_edges='0,a' n_bin_alpha='1'/></Bin></Bins>")
    with pytest.raises(GeometryError, match="malformed"):
        read_binning_xml(p)
    p.write_text("not xml")
    with pytest.raises(GeometryError, match="cannot read"):
        read_binning_xml(p)


def test_ild_ecal():
    g = ild_ecal()
    assert g.n_layers == 30
    pitch = np.diff(g.layer_front_mm)
    np.testing.assert_allclose(pitch[:19], 2.6)
    np.testing.assert_allclose(pitch[20:], 4.7)
    ix, iy, inside = g.cell_of(np.array([0.1, -74.9, 80.0]), np.array([0.1, 74.9, 0.0]))
    assert ix.tolist()[:2] == [15, 0] and iy.tolist()[:2] == [15, 29]
    assert inside.tolist() == [True, True, False]


def test_named_geometry_covers_the_point_cloud_ecal():
    from caloforge.geometry import GeometryError, PlanarGeometry, named_geometry

    g = named_geometry("ild-ecal")
    assert isinstance(g, PlanarGeometry) and (g.n_cells_x, g.n_layers) == (30, 30)
    wide = named_geometry("ild-ecal:80")
    assert wide.n_cells_x == 80 and not g.same_binning(wide)
    assert g.same_binning(named_geometry("ILD_ECAL")) and not g.same_binning(named_geometry("ds2"))
    assert named_geometry("ds2").n_voxels == 6480
    for bad in ("ild-ecal:x", "ild-ecal:0", "ds9"):
        with pytest.raises(GeometryError):
            named_geometry(bad)

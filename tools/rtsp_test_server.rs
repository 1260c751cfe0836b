//! `saccade-rtsp-test-server PORT [LAUNCH]`: an RTSP server (gst-rtsp-server) on 127.0.0.1:PORT serving
//! `/test`, for the tests of `rtsp://` sources (cargo feature `gstreamer`). LAUNCH is the media's pipeline
//! (default: a 320×240 moving test pattern at 10 fps, JPEG over RTP). Prints `ready` once it listens, then
//! serves until killed: a test restarts the "camera" by killing it and starting it again on the same port.

use gstreamer as gst;
use gstreamer_rtsp_server as rtsp;
use rtsp::prelude::*;

const DEFAULT_LAUNCH: &str = "( videotestsrc is-live=true pattern=ball \
    ! video/x-raw,width=320,height=240,framerate=10/1,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: saccade-rtsp-test-server PORT [LAUNCH]"))?;
    port.parse::<u16>()
        .map_err(|e| anyhow::anyhow!("PORT `{port}` is not a port number: {e}"))?;
    let launch = args.next().unwrap_or_else(|| DEFAULT_LAUNCH.to_string());
    gst::init()?;
    let main_loop = gst::glib::MainLoop::new(None, false);
    let server = rtsp::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service(&port);
    let mounts = server
        .mount_points()
        .ok_or_else(|| anyhow::anyhow!("the RTSP server has no mount points"))?;
    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(&launch);
    factory.set_shared(true);
    mounts.add_factory("/test", factory);
    let _id = server
        .attach(None)
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    println!("ready");
    main_loop.run();
    Ok(())
}

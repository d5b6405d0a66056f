// Runs the test bed's search node: one OpenSearch node in this JVM, bound to
// 127.0.0.1 on the HTTP and transport ports the harness chose. Launched as a
// single source file (`java -cp <classpath> SearchNode.java ...`), so nothing is
// compiled ahead. The runner's own main cannot do this: it caps the HTTP port at
// 9299 and takes no transport port.
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import org.codelibs.opensearch.runner.OpenSearchRunner;

public class SearchNode {
  public static void main(String[] args) throws Exception {
    if (args.length != 3) {
      System.err.println("usage: SearchNode.java <base-path> <http-port> <transport-port>");
      System.exit(2);
    }
    String basePath = Path.of(args[0]).toAbsolutePath().toString();
    int httpPort = Integer.parseInt(args[1]);
    int transportPort = Integer.parseInt(args[2]);

    OpenSearchRunner runner = new OpenSearchRunner();
    runner.setMaxHttpPort(httpPort);
    runner.onBuild((index, settings) -> {
      settings.put("network.host", "127.0.0.1");
      settings.put("http.port", httpPort);
      settings.put("transport.port", transportPort);
      // A test node: no disk-watermark refusals on a nearly full CI disk.
      settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
    });

    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        runner.close();
      } catch (Exception e) {
        e.printStackTrace();
      }
      stopped.countDown();
    }));

    // The runner's node numbering starts at 1 and adds it to the base port.
    runner.build(OpenSearchRunner.newConfigs()
        .basePath(basePath)
        .numOfNode(1)
        .baseHttpPort(httpPort - 1)
        .clusterName("test-bed")
        .printOnFailure());
    System.out.println("search node listening on http://127.0.0.1:" + httpPort);
    stopped.await();
  }
}

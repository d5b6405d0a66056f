// Runs the test bed's search node: one OpenSearch node in this JVM, bound to
// 127.0.0.1 on the HTTP and transport ports the harness chose, alone or as one
// member of a cluster whose other members run in their own JVMs. Launched as a
// single source file (`java -cp <classpath> SearchNode.java ...`), so nothing is
// compiled ahead. The runner's own main cannot do this: it caps the HTTP port at
// 9299 and takes no transport port.
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import org.codelibs.opensearch.runner.OpenSearchRunner;

public class SearchNode {
  public static void main(String[] args) throws Exception {
    if (args.length != 3 && args.length != 6) {
      System.err.println("usage: SearchNode.java <base-path> <http-port> <transport-port>"
          + " [<node-name> <seed-transport-addresses,...> <initial-cluster-manager-names,...>]");
      System.exit(2);
    }
    String basePath = Path.of(args[0]).toAbsolutePath().toString();
    int httpPort = Integer.parseInt(args[1]);
    int transportPort = Integer.parseInt(args[2]);
    // Alone (3 arguments), the node bootstraps a cluster of itself: the runner sets no
    // discovery settings, and a node bound to loopback with none elects itself. As a
    // member (6 arguments), it has its own name (the runner would call every JVM's node
    // "Node 1"), finds the others at their transport addresses, and the first start of
    // the cluster waits for the named cluster-manager-eligible nodes to vote; a restart
    // on the same data rejoins the cluster recorded there and ignores that list.
    boolean member = args.length == 6;
    String nodeName = member ? args[3] : null;
    List<String> seedHosts = member ? commaList(args[4]) : List.of();
    List<String> initialManagers = member ? commaList(args[5]) : List.of();

    OpenSearchRunner runner = new OpenSearchRunner();
    runner.setMaxHttpPort(httpPort);
    runner.onBuild((index, settings) -> {
      settings.put("network.host", "127.0.0.1");
      settings.put("http.port", httpPort);
      settings.put("transport.port", transportPort);
      // A test node: no disk-watermark refusals on a nearly full CI disk.
      settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
      if (member) {
        settings.put("node.name", nodeName);
        settings.putList("discovery.seed_hosts", seedHosts);
        settings.putList("cluster.initial_cluster_manager_nodes", initialManagers);
      }
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

  private static List<String> commaList(String value) {
    return Arrays.stream(value.split(",")).map(String::trim).filter(s -> !s.isEmpty()).toList();
  }
}

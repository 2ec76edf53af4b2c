// Prints every MBean attribute of a running JVM the way the Prometheus JMX Exporter matches its rules'
// `pattern`s: `domain<key=value, ...><>attribute` (keys in the order the MBean was registered). Attaches
// to the JVM by pid and starts its local (same-host, same-user) management agent.
//
//   java deploy/k8s/monitoring/JmxNames.java PID
//
// tests/integration/test_k8s_metrics.py runs it on the local stack's Kafka to check that every rule
// of base/kafka/kafka-metrics.yml matches an MBean the broker really has.

import com.sun.tools.attach.VirtualMachine;

import java.util.Set;
import java.util.TreeSet;
import javax.management.MBeanAttributeInfo;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class JmxNames {
    public static void main(String[] args) throws Exception {
        VirtualMachine vm = VirtualMachine.attach(args[0]);
        String address;
        try {
            address = vm.startLocalManagementAgent();
        } finally {
            vm.detach();
        }
        Set<String> out = new TreeSet<>();
        try (JMXConnector connector = JMXConnectorFactory.connect(new JMXServiceURL(address))) {
            MBeanServerConnection server = connector.getMBeanServerConnection();
            for (ObjectName name : server.queryNames(null, null)) {
                String props = name.getKeyPropertyListString().replace(",", ", ");
                for (MBeanAttributeInfo attribute : server.getMBeanInfo(name).getAttributes()) {
                    out.add(name.getDomain() + "<" + props + "><>" + attribute.getName());
                }
            }
        }
        out.forEach(System.out::println);
    }
}
